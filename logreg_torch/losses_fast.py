"""The CPU kernels' old import path: this name is ``logreg_torch.loss.cpu`` itself (the same
module object), so that reading or setting its attributes (tests set ``_CHUNK``) acts on it."""

import sys

from logreg_torch.loss import cpu

sys.modules[__name__] = cpu
