"""``python -m logreg_torch`` is the ``logreg-torch`` command."""

import sys

from logreg_torch.cli import main

sys.exit(main())
