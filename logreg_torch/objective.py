"""The training criterion: our BCE (weighted, smoothed) plus l1/l2 on the weights, and the
choice of the fused linear + loss fast path (logreg_torch.fast)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from logreg_torch.config import Config
from logreg_torch.fast import linear_bce_with_logits, split_head
from logreg_torch.loss.formulas import (
    bcel_grad2_input,
    bcel_grad_input,
    bcel_loss,
    bcel_loss_lean,
    smooth,
)
from logreg_torch.losses import (
    _check_range,
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
)
from logreg_torch.model import penalized_weights


@dataclass
class Objective:
    """The training criterion: our BCE (weighted, smoothed) plus l1/l2 on the weights."""

    from_logits: bool
    pos_weight: Tensor | None
    label_smoothing: float
    l2: float
    l1: float
    check_range: bool
    fused: bool = False  # fuse the model's last Linear with the loss (logreg_torch.fast)
    # Per-row weights of the training rows (the estimator's sample_weight x class_weight, mean
    # 1), or None. The fused path has none: a weighted fit takes the plain path.
    weight: Tensor | None = None

    def model_loss(self, model: nn.Module, features: Tensor, targets: Tensor) -> Tensor:
        """Data loss of ``model(features)``; on the fast path the last layer and the loss run
        as one fused autograd Function, with the same values and gradients."""
        parts = split_head(model) if self.fused and self.weight is None else None
        if parts is None:
            return self.data_loss(model(features), targets, self.weight)
        body, head = parts
        if self.check_range and self.label_smoothing:
            _check_range("training targets", (targets, "target"))
        if self.label_smoothing:
            targets = targets * (1 - self.label_smoothing) + self.label_smoothing / 2
        return linear_bce_with_logits(body(features), head, targets, self.pos_weight,
                                      self.check_range)

    def data_loss(self, logits: Tensor, targets: Tensor, weight: Tensor | None = None) -> Tensor:
        """Mean loss of ``logits``; ``weight``: per-row weights of these rows, or None."""
        if self.from_logits:
            return binary_cross_entropy_with_logits(
                logits, targets, weight, pos_weight=self.pos_weight,
                label_smoothing=self.label_smoothing, check_range=self.check_range)
        # The probability version, for people who want it; weights pos_weight the same way.
        probs = torch.sigmoid(logits)
        if self.pos_weight is not None:
            positive = 1 + (self.pos_weight - 1) * targets
            weight = positive if weight is None else weight * positive
        return binary_cross_entropy(probs, targets, weight, label_smoothing=self.label_smoothing,
                                    check_range=self.check_range)

    def row_terms(self, z: Tensor, y: Tensor, weight: Tensor | None,
                  order: int) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """The logits loss of rows ``z`` summed, and its first and (``order`` 2) second
        derivative in each logit, in closed form (logreg_torch.loss.formulas): the per-row terms
        of Newton for a linear model (logreg_torch.linear_terms), which would otherwise run
        autodiff through the loss for every block of rows. The targets are not checked again
        (the solve that reaches here has checked them)."""
        assert self.from_logits, "closed-form row terms are those of the logits loss"
        t = smooth(y, self.label_smoothing) if self.label_smoothing else y
        pw = self.pos_weight
        loss = bcel_loss(z, t, pw) if pw is not None else bcel_loss_lean(z, t)
        d1 = bcel_grad_input(z, t, pw) if order >= 1 else None
        d2 = bcel_grad2_input(z, t, pw) if order == 2 else None
        if weight is not None:
            loss = loss * weight
            d1 = None if d1 is None else d1 * weight
            d2 = None if d2 is None else d2 * weight
        return loss.sum(), d1, d2

    def penalty(self, model: nn.Module) -> Tensor | float:
        return self.penalty_of(penalized_weights(model))

    def penalty_of(self, params: list[Tensor]) -> Tensor | float:
        """l2/l1 on the weight matrices among ``params`` (two or more dimensions: never
        biases), as ``penalized_weights`` picks them."""
        if not (self.l2 or self.l1):
            return 0.0
        total: Tensor | float = 0.0
        for w in params:
            if w.dim() < 2:
                continue
            if self.l2:
                total = total + 0.5 * self.l2 * w.pow(2).sum()
            if self.l1:
                total = total + self.l1 * w.abs().sum()
        return total

    def penalty_hessian_of(self, params: list[Tensor]) -> Tensor:
        """The diagonal of ``penalty_of``'s Hessian over ``params`` flattened in order: l2 on
        each entry of a weight matrix, 0 on the rest (l1's second derivative is 0 wherever it
        has one), so Newton needs no P backward calls for it (logreg_torch.newton)."""
        return torch.cat([torch.full((p.numel(),), self.l2 if p.dim() >= 2 else 0.0,
                                     dtype=p.dtype, device=p.device) for p in params])


def make_objective(cfg: Config, train_targets: Tensor, device: torch.device,
                   dtype: torch.dtype) -> Objective:
    pos_weight = cfg.loss.pos_weight
    if pos_weight == "balanced":
        # negatives / positives on the training split, as scikit-learn's class_weight="balanced"
        # gives the same ratio between the classes.
        n_pos = float(train_targets.sum())
        pos_weight = (len(train_targets) - n_pos) / max(n_pos, 1.0)
    return Objective(
        from_logits=cfg.loss.from_logits,
        pos_weight=None if pos_weight is None else torch.tensor(float(pos_weight), device=device,
                                                                dtype=dtype),
        label_smoothing=cfg.loss.label_smoothing,
        l2=cfg.loss.l2,
        l1=cfg.loss.l1,
        check_range=cfg.loss.check_range,
        fused=fast_path_applies(cfg),
    )


def fast_path_applies(cfg: Config) -> bool:
    """The fused path needs logits, full precision (no autocast) and an uncompiled model."""
    return (cfg.train.fast_path and cfg.loss.from_logits and not cfg.train.compile
            and cfg.train.precision in ("fp32", "fp64"))
