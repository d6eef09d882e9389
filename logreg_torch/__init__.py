"""logreg_torch: hand-written binary cross-entropy and logistic regression in PyTorch.

The losses are imported on first use (``logreg_torch.BCELoss`` or ``from logreg_torch import
BCELoss``), not by ``import logreg_torch``: the ``logreg-torch`` command imports this package,
and ``--help`` or ``config`` should not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "BCELoss",
    "BCEWithLogitsLoss",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
]

if TYPE_CHECKING:
    from logreg_torch.losses import (
        BCELoss,
        BCEWithLogitsLoss,
        binary_cross_entropy,
        binary_cross_entropy_with_logits,
    )


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("logreg_torch.losses"), name)
    raise AttributeError(f"module 'logreg_torch' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
