"""A fused linear + BCE-with-logits autograd Function: the training loop's fast path.

Logistic regression is memory-bound: a full-batch gradient needs ``z = X w + b`` and
``X^T (sigmoid(z) - y)``. Done as separate ops, X is read from memory twice and every
N-sized intermediate is written out and read back. Here both products run block by block:
a block of rows is read once, and while it is still in cache dL/dz and that block's share of
dL/dw are computed (the style of fused linear-cross-entropy kernels). The loss value itself
comes from the logits afterwards. Only the D-sized gradients (and dL/dz when the features need
a gradient) are kept for backward.

It is an ordinary ``torch.autograd.Function`` on (features, weight, bias, targets): any model
whose last layer is ``nn.Linear(in, 1)`` can use it for that layer (the MLP does), and it gives
the same values and gradients as ``F.linear`` followed by ``binary_cross_entropy_with_logits``
(a test checks). It supports first-order gradients only; the plain path remains for the rest.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from logreg_torch.interrupts import critical
from logreg_torch.loss import route as _route
from logreg_torch.loss.checks import check_range as _check_range
from logreg_torch.loss.cpu import bcel_chunk as _bcel_chunk
from logreg_torch.loss.cpu import chunked_sum as _chunked_sum
from logreg_torch.loss.cpu import pos_weight_terms as _pos_weight_terms
from logreg_torch.loss.cpu import scratch_tensors as _scratch
from logreg_torch.runtime import thread_pool

# Rows per block: a block of a 100-feature float32 matrix is ~6 MB, in the last-level cache,
# so the second product reads it from cache; large enough that Python overhead is small.
BLOCK_ROWS = 16384

# BLAS runs a matrix-vector product of one block on one core, and each elementwise op on a
# block is below torch's threshold for splitting work across threads; so blocks go to a pool
# of torch.get_num_threads() threads (torch ops release the GIL), each with its own share of
# X^T g. Created on first use. On a shared machine what matters is OpenMP's wait policy, not
# the pool size: `logreg-torch` sets OMP_WAIT_POLICY=PASSIVE (cli._quiet_openmp_threads). By
# scripts/bench_threads.py (N=2e5, D=100, busy 2-core machine), beside one more CPU-bound
# process the fused epoch slowed 1.05x with PASSIVE and this pool (1.09x with one worker, 1.41x
# spinning), torch's own ops 1.8x; single-threaded MKL (MKL_NUM_THREADS=1) helped less (1.46x).
POOL_WORKERS: int | None = None  # None: torch.get_num_threads()
def _logits_into(features: Tensor, w: Tensor, bias: Tensor | None, out: Tensor) -> None:
    if bias is None:
        torch.mv(features, w, out=out)
    else:
        torch.addmv(bias, features, w, out=out)


def _blocks(starts: list[int], step: int, features: Tensor, w: Tensor, bias: Tensor | None,
            targets: Tensor, pos_weight: Tensor | None, logits: Tensor, grad_z: Tensor,
            want_w: bool) -> Tensor | None:
    """For each block of rows: logits, n * dL/dz (into the given N-sized tensors) and the
    block's share of n * dL/dw, summed over the blocks and returned."""
    grad_w = torch.zeros_like(w) if want_w else None
    with torch.no_grad():  # grad mode is per thread; a pool thread starts with it on
        for start in starts:
            rows = slice(start, start + step)
            xb, zb, gb, yb = features[rows], logits[rows], grad_z[rows], targets[rows]
            _logits_into(xb, w, bias, zb)
            torch.sigmoid(zb, out=gb)
            if pos_weight is None:
                gb.sub_(yb)
            else:  # (pw*y + 1 - y) * sigmoid(z) - pw*y
                pwb = pos_weight if pos_weight.dim() == 0 else pos_weight[rows]
                pwy, lw = _pos_weight_terms(pwb, yb)
                gb.mul_(lw).sub_(pwy)
            if want_w:
                grad_w.addmv_(xb.t(), gb)  # xb is still in cache: the second "read" is cheap
    return grad_w


def _one_block(features: Tensor, w: Tensor, bias: Tensor | None, targets: Tensor,
               pos_weight: Tensor | None, logits: Tensor, grad_z: Tensor, want_w: bool,
               in_range: bool) -> tuple[Tensor, Tensor | None]:
    """All rows at once: (loss sum, n * dL/dw), with n * dL/dz written into ``grad_z``."""
    with torch.no_grad():
        _logits_into(features, w, bias, logits)
        scratch = None if features.is_cuda else _scratch(len(logits), logits.dtype)
        total = _bcel_chunk(logits, targets, pos_weight, None, grad_z, 1.0, scratch, in_range)
        return total, torch.mv(features.t(), grad_z) if want_w else None


def _epoch(features: Tensor, w: Tensor, bias: Tensor | None, targets: Tensor,
           pos_weight: Tensor | None, check_range: bool, want_w: bool
           ) -> tuple[Tensor, Tensor | None, Tensor]:
    """torch ops, block by block: (loss sum, n * dL/dw, n * dL/dz)."""
    n = features.shape[0]
    fn = "binary_cross_entropy_with_logits"
    if check_range:
        _check_range(fn, (targets, "target"))
    logits = torch.empty(n, dtype=w.dtype, device=w.device)
    grad_z = torch.empty_like(logits)  # n * dL/dz
    step = n if features.is_cuda else BLOCK_ROWS
    starts = list(range(0, n, step))
    workers = min(POOL_WORKERS or torch.get_num_threads(), len(starts))
    if len(starts) == 1:  # a minibatch: the loss kernel gives loss and dL/dz together
        total, grad_w = _one_block(features, w, bias, targets, pos_weight, logits, grad_z,
                                   want_w, check_range)
        return total, grad_w, grad_z
    # Only what X^T g needs runs between the two products of a block, so that the
    # block is still in cache for the second: z, then sigmoid(z) - y.
    args = (step, features, w, bias, targets, pos_weight, logits, grad_z, want_w)
    if workers > 1 and not torch.is_autocast_enabled(features.device.type):
        # Ctrl-C waits for the workers: left running, they would still write into
        # these tensors while the interrupted run saves and exits.
        with critical():
            parts = [thread_pool(workers).submit(_blocks, starts[k::workers], *args)
                     for k in range(workers)]
            partials = [part.result() for part in parts]  # fixed order: deterministic
        grad_w = torch.stack(partials).sum(0) if want_w else None
    else:
        grad_w = _blocks(starts, *args)
    # The loss value needs no second pass over X: it is computed from the logits, by
    # the loss module's chunked kernel (accurate in both tails).
    total, _ = _chunked_sum(_bcel_chunk, logits, targets, pos_weight, None, None,
                            (fn, False, False, check_range))
    return total, grad_w, grad_z


class _LinearBCEWithLogits(torch.autograd.Function):
    @staticmethod
    def forward(ctx, features, weight, bias, targets, pos_weight, check_range):
        n = features.shape[0]
        w = weight[0]
        want_w = ctx.needs_input_grad[1]
        want_b = bias is not None and ctx.needs_input_grad[2]
        want_x = ctx.needs_input_grad[0]
        scale = 1.0 / max(n, 1)  # n == 0 never reaches here (see the wrapper)
        ctx.scale = scale
        if _route.linear_applies(features, weight, pos_weight):
            # CUDA: one Triton kernel reads each block of X once (loss/triton_linear.py); it
            # returns the mean and its gradients
            loss, grad_w, grad_b, grad_z = _route.linear().forward(
                features, w, bias, targets.contiguous(), pos_weight, check_range, want_x)
            grad_w, grad_b = grad_w.to(w.dtype), grad_b.to(w.dtype)
        else:
            total, grad_w, grad_z = _epoch(features, w, bias, targets, pos_weight,
                                           check_range, want_w)
            grad_b = grad_z.sum() * scale if want_b else None
            if want_w:
                grad_w.mul_(scale)
            loss = total * scale
        ctx.save_for_backward(grad_w if want_w else None, grad_b if want_b else None,
                              grad_z if want_x else None, weight)
        return loss.to(w.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        grad_w, grad_b, grad_z, weight = ctx.saved_tensors
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = torch.outer(grad_z * (grad_out * ctx.scale), weight[0])
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
