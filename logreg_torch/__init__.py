"""logreg_torch: hand-written binary cross-entropy and logistic regression in PyTorch.

The losses load on first use (PEP 562), so that ``import logreg_torch.cli`` does not import
torch: the command line then handles Ctrl-C from its first moment, torch's import included.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "BCELoss",
    "BCEWithLogitsLoss",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
]

if TYPE_CHECKING:
    from logreg_torch.loss import (
        BCELoss,
        BCEWithLogitsLoss,
        binary_cross_entropy,
        binary_cross_entropy_with_logits,
    )


def __getattr__(name: str) -> Any:
    if name in __all__:
        from logreg_torch import loss as losses

        return getattr(losses, name)
    raise AttributeError(f"module 'logreg_torch' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
