"""A fused linear + BCE-with-logits autograd Function: the training loop's fast path.

Logistic regression is memory-bound: a full-batch gradient needs ``z = X w + b`` and
``X^T (sigmoid(z) - y)``. Done as separate ops, X is read from memory twice and every
N-sized intermediate is written out and read back. Here both products run block by block:
a block of rows is read once, and while it is still in cache the loss, dL/dz and that
block's share of dL/dw are computed (the style of fused linear-cross-entropy kernels). Only the
D-sized gradients are kept for backward.

It is an ordinary ``torch.autograd.Function`` on (features, weight, bias, targets): any model
whose last layer is ``nn.Linear(in, 1)`` can use it for that layer (the MLP does), and it gives
the same values and gradients as ``F.linear`` followed by ``binary_cross_entropy_with_logits``
(a test checks). It supports first-order gradients only; the plain path remains for the rest.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from logreg_torch.losses import _bcel_chunk, _check_range

# Rows per block: a block of a 100-feature float32 matrix is ~6 MB, in the last-level cache,
# so the second product reads it from cache; large enough that Python overhead is small.
BLOCK_ROWS = 16384


class _LinearBCEWithLogits(torch.autograd.Function):
    @staticmethod
    def forward(ctx, features, weight, bias, targets, pos_weight, check_range):
        n = features.shape[0]
        w = weight[0]
        want_w = ctx.needs_input_grad[1]
        want_b = bias is not None and ctx.needs_input_grad[2]
        want_x = ctx.needs_input_grad[0]
        grad_w = torch.zeros_like(w) if want_w else None
        grad_b = torch.zeros((), dtype=w.dtype, device=w.device) if want_b else None
        grad_z = torch.empty(n, dtype=w.dtype, device=w.device) if want_x else None
        total = torch.zeros((), dtype=torch.float64, device=w.device)
        scale = 1.0 / max(n, 1)
        if check_range:
            _check_range(targets, "target", "binary_cross_entropy_with_logits")
        step = n if features.is_cuda else BLOCK_ROWS
        for start in range(0, n, step):
            xb = features[start:start + step]
            yb = targets[start:start + step]
            z = torch.mv(xb, w) if bias is None else torch.addmv(bias, xb, w)
            gz = torch.empty_like(z)
            pwb = pos_weight if pos_weight is None or pos_weight.dim() == 0 else pos_weight[
                start:start + step]
            loss = _bcel_chunk(z, yb, pwb, gz)
            total += loss.sum()
            gz.mul_(scale)
            if want_w:
                grad_w.addmv_(xb.t(), gz)  # xb is still in cache: the second "read" is cheap
            if want_b:
                grad_b += gz.sum()
            if want_x:
                grad_z[start:start + step] = gz
        ctx.save_for_backward(grad_w, grad_b, grad_z, weight)
        return (total * scale).to(w.dtype)  # 0/0 would need n == 0; callers never pass that

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        grad_w, grad_b, grad_z, weight = ctx.saved_tensors
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = torch.outer(grad_z * grad_out, weight[0])
        if ctx.needs_input_grad[1]:
            gw = (grad_w * grad_out).unsqueeze(0)
        if ctx.needs_input_grad[2]:
            gb = (grad_b * grad_out).reshape(1)
        return gx, gw, gb, None, None, None


def linear_bce_with_logits(features: Tensor, head: nn.Linear, targets: Tensor,
                           pos_weight: Tensor | None = None, check_range: bool = True) -> Tensor:
    """Mean BCE-with-logits of ``head(features).squeeze(-1)`` against ``targets``, fused."""
    if head.out_features != 1 or features.dim() != 2 or len(features) == 0:
        raise ValueError("the fused path needs a non-empty (N, D) input and a Linear(D, 1) head")
    n = len(features)
    if targets.shape != (n,):
        raise ValueError(f"targets of shape {tuple(targets.shape)} must be ({n},), one per row")
    if targets.dtype != head.weight.dtype:
        raise RuntimeError(f"targets dtype {targets.dtype} does not match the model's "
                           f"{head.weight.dtype}")
    if pos_weight is not None:
        if pos_weight.numel() == 1:
            pos_weight = pos_weight.reshape(())
        elif pos_weight.shape != (n,):
            raise ValueError(f"pos_weight of shape {tuple(pos_weight.shape)} must be a scalar "
                             f"or ({n},)")
    return _LinearBCEWithLogits.apply(features, head.weight, head.bias, targets, pos_weight,
                                      check_range)


def split_head(model: nn.Module) -> tuple[nn.Module, nn.Linear] | None:
    """(body, head) when the model ends in ``nn.Linear(in, 1)`` and says how to split (a
    ``body_and_head`` method); None otherwise, and the loop takes the plain path."""
    fn = getattr(model, "body_and_head", None)
    if fn is None:
        return None
    body, head = fn()
    if not isinstance(head, nn.Linear) or head.out_features != 1:
        return None
    return body, head
