"""The formulas of binary cross-entropy, and their derivatives: everything else in the package is
plumbing around these (the Triton kernels and the CPU kernels compute the same expressions).

Take the *corrected probability* of each example (p where the label is 1, 1 - p where it is 0),
take its *log*, and report the *negative mean*. With soft labels y in [0, 1] that is
``-(y log p + (1 - y) log(1 - p))`` per element; on logits x (p = sigmoid(x)) it is
``softplus(x) - y x``, and with ``pos_weight`` the positive term is weighted:
``(1 - y) softplus(x) + pw y softplus(-x)``.

Elementwise, out of place, from differentiable ops, so that autograd can differentiate the
backward itself (gradgradcheck, Hessians).
"""

from __future__ import annotations

import torch
from torch import Tensor

# torch clamps each log term here, so p = 0 or 1 gives a finite loss
LOG_MIN = -100.0
# torch's floor on p(1-p) in the gradient, so it stays finite at p = 0 or 1. torch stores it as
# a float32 constant, 9.99999996e-13, which is what float64 parity needs.
EPS = 9.999999960041972e-13


def bce_loss(p: Tensor, y: Tensor) -> Tensor:
    # -log(corrected probability), each log clamped at -100 as torch does, so p = 0 or 1 gives
    # a finite loss. The same expression and order as torch's kernel, for bitwise-close results.
    log_p = torch.log(p).clamp_min(LOG_MIN)
    log_1mp = torch.log1p(-p).clamp_min(LOG_MIN)
    return (y - 1) * log_1mp - y * log_p


def bce_grad_input(p: Tensor, y: Tensor) -> Tensor:
    # torch's floor on p(1-p) keeps it finite at p = 0 or 1
    return (p - y) / ((1 - p) * p).clamp_min(EPS)


def bce_grad_target(p: Tensor) -> Tensor:
    return torch.log1p(-p).clamp_min(LOG_MIN) - torch.log(p).clamp_min(LOG_MIN)


def bcel_loss(x: Tensor, y: Tensor, pw: Tensor | None) -> Tensor:
    # (1-y)*softplus(x) + pw*y*softplus(-x), arranged so that no two large terms cancel:
    # for hard labels relu(x) - y*x is exactly 0 or |x|, and the small log1p term is added last.
    # torch's (1-y)*x - logsigmoid(x) loses it: logit -40 with target 0 gives 0, not 4.2e-18.
    t = torch.log1p(torch.exp(-x.abs()))
    if pw is None:
        return (x.clamp_min(0) - y * x) + t
    pwy = pw * y
    return ((1 - y) * x.clamp_min(0) + pwy * (-x).clamp_min(0)) + (pwy + 1 - y) * t


def bcel_loss_lean(x: Tensor, y: Tensor) -> Tensor:
    """``bcel_loss`` without pos_weight, the same arithmetic (the same bits) in three
    temporaries instead of eight: the float64 finish runs it over every row, never under
    autograd."""
    return x.clamp_min(0).sub_(y * x).add_(x.abs().neg_().exp_().log1p_())


def bcel_grad_input(x: Tensor, y: Tensor, pw: Tensor | None) -> Tensor:
    if pw is None:
        return torch.sigmoid(x) - y
    pwy = pw * y
    return (pwy + 1 - y) * torch.sigmoid(x) - pwy


def bcel_grad2_input(x: Tensor, y: Tensor, pw: Tensor | None) -> Tensor:
    """The second derivative in x of ``bcel_loss``: the first is affine in sigmoid(x)."""
    s = torch.sigmoid(x)
    curvature = s * (1 - s)
    return curvature if pw is None else (pw * y + 1 - y) * curvature


def softplus(x: Tensor) -> Tensor:
    """log(1 + exp(x)) without overflow, accurate in both tails."""
    return x.clamp_min(0) + torch.log1p(torch.exp(-x.abs()))


def bcel_grad_target(x: Tensor, pw: Tensor | None) -> Tensor:
    return -x if pw is None else pw * softplus(-x) - softplus(x)


def bcel_grad_pos_weight(x: Tensor, y: Tensor) -> Tensor:
    return y * softplus(-x)


def smooth(y: Tensor, label_smoothing: float) -> Tensor:
    """Keras's label smoothing: targets move towards 1/2 by ``label_smoothing``."""
    return y * (1 - label_smoothing) + label_smoothing / 2


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Half types are computed in float32 (as torch's own kernels do internally)."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
