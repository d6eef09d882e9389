"""Binary cross-entropy (log loss), written by hand; the files show the design:

- ``formulas``: the loss and its derivatives, on one screen;
- ``functional`` and ``modules``: the public functions and modules, mirroring torch's, and the
  choice of path for each call;
- ``checks``: arguments, shapes, dtypes and the [0, 1] range checks;
- ``reference``: the formulas as autograd Functions, the path that works everywhere;
- ``cpu``: the CPU kernels (chunked, the gradient written in the forward pass);
- ``route``: when the Triton kernels run (CUDA tensors; never imports triton itself);
- ``triton_kernels``, ``triton_ops``, ``triton_linear``: the GPU kernels, their registration as
  torch custom ops, and fast.py's fused linear + loss kernel.

``logreg_torch.losses`` and ``logreg_torch.losses_fast`` are the old names, kept working.
"""

from logreg_torch.loss.checks import REDUCTIONS
from logreg_torch.loss.functional import binary_cross_entropy, binary_cross_entropy_with_logits
from logreg_torch.loss.modules import BCELoss, BCEWithLogitsLoss

__all__ = [
    "REDUCTIONS",
    "BCELoss",
    "BCEWithLogitsLoss",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
]
