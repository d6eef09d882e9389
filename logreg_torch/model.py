"""Models: logistic regression, and a small MLP that reuses the same loss.

Both return logits from ``forward`` (shape ``(N,)``), so they pair with a loss that takes
logits (``from_logits=True``); probabilities come from ``predict_proba``. The models take plain
constructor arguments and know nothing of configs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

MODEL_NAMES = ("logistic", "mlp")


class _BinaryClassifier(nn.Module):
    """Shared interface: ``forward`` -> logits, ``predict_proba`` -> probs, ``predict`` -> 0/1."""

    in_features: int

    def _check_input(self, x: Tensor) -> None:
        if x.dim() != 2 or x.shape[1] != self.in_features:
            raise ValueError(
                f"{type(self).__name__} expected input of shape (N, {self.in_features}), "
                f"got {tuple(x.shape)}"
            )

    def predict_proba(self, x: Tensor) -> Tensor:
        """P(y = 1 | x), shape ``(N,)``.

        Stays differentiable (no ``no_grad`` here) so it can feed a probability-space loss or a
        calibration step; wrap the call in ``torch.no_grad()`` when only evaluating.
        """
        return torch.sigmoid(self(x))

    def predict(self, x: Tensor, threshold: float = 0.5) -> Tensor:
        """Hard 0/1 labels (``long``, shape ``(N,)``): 1 where ``predict_proba(x) >= threshold``.

        Runs under ``inference_mode`` since labels have no gradient. Like any torch module it
        uses the current train/eval mode: call ``model.eval()`` first when dropout is on.
        """
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        with torch.inference_mode():
            return (self.predict_proba(x) >= threshold).long()


class LogisticRegression(_BinaryClassifier):
    """``logits = x @ w + b``: exactly one ``nn.Linear(in_features, 1)``, stored as ``linear``."""

    def __init__(self, in_features: int, bias: bool = True) -> None:
        super().__init__()
        if in_features < 1:
            raise ValueError(f"in_features must be >= 1, got {in_features}")
        self.in_features = in_features
        self.linear = nn.Linear(in_features, 1, bias=bias)
        # The loss is convex in (w, b), so the start point does not change the optimum; zeros
        # (as scikit-learn uses) give p = 0.5 everywhere and a first loss of exactly ln 2.
        nn.init.zeros_(self.linear.weight)
        if self.linear.bias is not None:
            nn.init.zeros_(self.linear.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Logits, shape ``(N,)``."""
        self._check_input(x)
        return self.linear(x).squeeze(-1)

    def body_and_head(self) -> tuple[nn.Module, nn.Linear]:
        """(everything before the last Linear, the last Linear): lets the training loop fuse
        the last layer with the loss (logreg_torch.fast)."""
        return nn.Identity(), self.linear


class MLP(_BinaryClassifier):
    """``Linear -> ReLU -> Dropout`` per hidden layer, then ``Linear(., 1)``: same interface."""

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int] = (64,),
        dropout: float = 0.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if in_features < 1:
            raise ValueError(f"in_features must be >= 1, got {in_features}")
        if any(int(h) < 1 for h in hidden):
            raise ValueError(f"hidden sizes must be >= 1, got {list(hidden)}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.in_features = in_features
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, int(h), bias=bias), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = int(h)
        layers.append(nn.Linear(width, 1, bias=bias))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """Logits, shape ``(N,)``."""
        self._check_input(x)
        return self.net(x).squeeze(-1)

    def body_and_head(self) -> tuple[nn.Module, nn.Linear]:
        """See LogisticRegression.body_and_head."""
        return self.net[:-1], self.net[-1]


def build_model(
    name: str,
    in_features: int,
    hidden: Sequence[int] = (64,),
    dropout: float = 0.0,
    bias: bool = True,
) -> nn.Module:
    """Model by name: ``"logistic"`` (ignores ``hidden`` and ``dropout``) or ``"mlp"``."""
    if name == "logistic":
        return LogisticRegression(in_features, bias=bias)
    if name == "mlp":
        return MLP(in_features, hidden=hidden, dropout=dropout, bias=bias)
    raise ValueError(f"unknown model name {name!r}; valid names: {', '.join(MODEL_NAMES)}")


def penalized_weights(model: nn.Module) -> list[Tensor]:
    """The weight matrices that l1/l2 penalties apply to; never biases.

    The rule is "parameters with two or more dimensions" (as nanoGPT's weight-decay groups):
    it picks every ``Linear`` weight and skips biases and norm-layer scales, and it works the
    same through ``DistributedDataParallel`` or ``torch.compile`` wrappers.
    """
    return [p for p in model.parameters() if p.dim() >= 2]
