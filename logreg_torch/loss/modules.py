"""The loss modules: subclasses of torch's, computed by ``functional``.

They subclass torch's so that isinstance dispatch elsewhere (skorch picks its predict
nonlinearity that way) treats them as torch's. torch's constructors set weight, pos_weight
(buffers) and reduction, including the deprecated size_average/reduce.
"""

from __future__ import annotations

from torch import Tensor, nn

from logreg_torch.loss.checks import check_label_smoothing, check_reduction
from logreg_torch.loss.functional import binary_cross_entropy, binary_cross_entropy_with_logits

__all__ = ["BCELoss", "BCEWithLogitsLoss"]


class BCELoss(nn.BCELoss):
    """``torch.nn.BCELoss`` computed by ``binary_cross_entropy``; plus keyword-only
    ``label_smoothing`` and ``check_range``."""

    def __init__(self, weight: Tensor | None = None, size_average=None, reduce=None,
                 reduction: str = "mean", *, label_smoothing: float = 0.0,
                 check_range: bool = True) -> None:
        super().__init__(weight, size_average, reduce, reduction)
        check_reduction(self.reduction)
        check_label_smoothing(label_smoothing)
        self.label_smoothing = label_smoothing
        self.check_range = check_range

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return binary_cross_entropy(input, target, self.weight, self.reduction,
                                    self.label_smoothing, check_range=self.check_range)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, label_smoothing={self.label_smoothing}"


class BCEWithLogitsLoss(nn.BCEWithLogitsLoss):
    """``torch.nn.BCEWithLogitsLoss`` computed by ``binary_cross_entropy_with_logits``; plus
    keyword-only ``label_smoothing`` and ``check_range``."""

    def __init__(self, weight: Tensor | None = None, size_average=None, reduce=None,
                 reduction: str = "mean", pos_weight: Tensor | None = None, *,
                 label_smoothing: float = 0.0, check_range: bool = True) -> None:
        super().__init__(weight, size_average, reduce, reduction, pos_weight)
        check_reduction(self.reduction)
        check_label_smoothing(label_smoothing)
        self.label_smoothing = label_smoothing
        self.check_range = check_range

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return binary_cross_entropy_with_logits(
            input, target, self.weight, self.pos_weight, self.reduction, self.label_smoothing,
            check_range=self.check_range,
        )

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, label_smoothing={self.label_smoothing}"
