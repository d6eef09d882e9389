"""The loss's old import path: ``logreg_torch.loss`` is the package now. Everything that was
importable from here still is, under the same name."""

from logreg_torch import loss as _package
from logreg_torch.loss import (  # noqa: F401
    REDUCTIONS,
    BCELoss,
    BCEWithLogitsLoss,
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
)
from logreg_torch.loss.checks import check_broadcast as _check_broadcast  # noqa: F401
from logreg_torch.loss.checks import check_label_smoothing as _check_label_smoothing  # noqa: F401
from logreg_torch.loss.checks import check_range as _check_range  # noqa: F401
from logreg_torch.loss.checks import check_reduction as _check_reduction  # noqa: F401
from logreg_torch.loss.checks import check_tensors as _check_tensors  # noqa: F401
from logreg_torch.loss.formulas import bce_grad_input as _bce_grad_input  # noqa: F401
from logreg_torch.loss.formulas import bce_grad_target as _bce_grad_target  # noqa: F401
from logreg_torch.loss.formulas import bce_loss as _bce_loss  # noqa: F401
from logreg_torch.loss.formulas import bcel_grad_input as _bcel_grad_input  # noqa: F401
from logreg_torch.loss.formulas import bcel_grad_pos_weight as _bcel_grad_pos_weight  # noqa: F401
from logreg_torch.loss.formulas import bcel_grad_target as _bcel_grad_target  # noqa: F401
from logreg_torch.loss.formulas import bcel_loss as _bcel_loss  # noqa: F401
from logreg_torch.loss.formulas import softplus as _softplus  # noqa: F401
from logreg_torch.loss.functional import _loss  # noqa: F401
from logreg_torch.loss.reference import LogitsLoss as _LogitsLoss  # noqa: F401
from logreg_torch.loss.reference import LogitsLossJvp as _LogitsLossJvp  # noqa: F401
from logreg_torch.loss.reference import ProbsLoss as _ProbsLoss  # noqa: F401
from logreg_torch.loss.reference import ProbsLossJvp as _ProbsLossJvp  # noqa: F401
from logreg_torch.loss.reference import logits_reference as _logits_reference  # noqa: F401
from logreg_torch.loss.reference import probs_reference as _probs_reference  # noqa: F401
from logreg_torch.loss.reference import reference as _reference  # noqa: F401

__all__ = list(_package.__all__)
