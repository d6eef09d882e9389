"""The CPU kernels of the losses (the eager fast path): mean/sum in cache-sized chunks, the
gradient written in the same pass as the loss. (Imported as ``logreg_torch.losses_fast`` too.)

``logreg_torch.loss`` takes this path (or, for small 0/1-label logits losses, the route of
differentiable ops below) only for real CPU tensors in plain eager mode (no compile, torch.func,
forward AD, fake/meta tensor or dispatch mode), mean or sum, only the input needing a gradient;
else the reference formulas. Tests check both give the same values and gradients.

Measured (2-core CPU, float32, fwd+bwd, logits): 0.45x the reference path at N=1e6 and 0.5x
at 1e7, from fewer passes over memory and reused scratch memory.
"""

from __future__ import annotations

import itertools
import math
import threading

import torch
from torch import Tensor, nn

from logreg_torch.loss.formulas import EPS, LOG_MIN
from logreg_torch.loss.formulas import compute_dtype as _compute_dtype
from logreg_torch.torch_compat import LOG_SIGMOID_BACKWARD as _LOG_SIGMOID_GRAD
from logreg_torch.torch_compat import LOG_SIGMOID_FORWARD as _LOG_SIGMOID
from logreg_torch.torch_compat import tracing_or_transformed

# Mean/sum are computed over chunks of this many elements: each chunk's temporaries stay in
# cache and reuse freed heap memory, instead of a dozen full-size tensors, each paying page
# faults for fresh memory (the dominant cost of eager elementwise code at 1e7 elements).
_CHUNK = 1 << 19
# Chunk-sized scratch tensors reused across calls, one set per thread: fresh memory for each
# call costs page faults comparable to the arithmetic itself. Only this eager path fills it,
# only with real CPU tensors it makes itself (the caller checks that no trace, fake tensor
# mode or transform is active), so a trace can never leave a fake tensor here.
_SCRATCH = threading.local()
_PLAIN_TYPES = (Tensor, nn.Parameter)


def check_range_host(t: Tensor, name: str, fn: str) -> None:
    """[0, 1] check of a real CPU tensor, naming the range found."""
    if t.numel() == 0:
        return
    lo, hi = (v.item() for v in torch.aminmax(t.detach()))  # a NaN propagates into both
    if lo != lo or hi != hi:
        raise RuntimeError(f"{fn}: {name} contains NaN; all elements must be in [0, 1]")
    if lo < 0 or hi > 1:
        raise RuntimeError(
            f"{fn}: all elements of {name} must be in [0, 1], found values in [{lo:g}, {hi:g}]"
        )


# The loss formulas (logreg_torch.loss.formulas) for one chunk. They run without autograd, so they
# work in place on their own temporaries: fewer allocations and passes over memory. Each
# returns the chunk's weighted loss sum and, when ``grad`` is given, writes d(loss)/dx times
# ``scale`` into it. ``scratch`` is None or three tensors shaped like x that the kernel may
# overwrite; ``in_range`` says the targets are known to lie in [0, 1].


def _weighted_sum(loss: Tensor, grad: Tensor | None, weight: Tensor | None) -> Tensor:
    if weight is not None:
        loss = loss.mul_(weight)
        if grad is not None:
            grad.mul_(weight)
    return loss.sum()


def pos_weight_terms(pos_weight: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """pw*y and pw*y + 1 - y: the weights of the log terms when pos_weight is given."""
    pwy = pos_weight * y
    return pwy, torch.add(pwy, 1).sub_(y)


def bce_chunk(p: Tensor, y: Tensor, _: None, weight: Tensor | None, grad: Tensor | None,
              scale: float, scratch: list[Tensor] | None, in_range: bool) -> Tensor:
    # Same arithmetic, same order, as formulas.bce_loss and formulas.bce_grad_input.
    log_1mp = torch.neg(p).log1p_().clamp_min_(LOG_MIN)
    log_p = torch.log(p).clamp_min_(LOG_MIN)
    loss = torch.sub(y, 1).mul_(log_1mp).sub_(log_p.mul_(y))
    if grad is not None:
        torch.sub(p, y, out=grad).div_(torch.sub(1, p).mul_(p).clamp_min_(EPS))
        if scale != 1:
            grad.mul_(scale)
    return _weighted_sum(loss, grad, weight)


def bcel_chunk(x: Tensor, y: Tensor, pos_weight: Tensor | None, weight: Tensor | None,
               grad: Tensor | None, scale: float, scratch: list[Tensor] | None,
               in_range: bool) -> Tensor:
    if scratch is None:  # CUDA (logreg_torch.fast): plain ops, one kernel each
        return _bcel_chunk_plain(x, y, pos_weight, weight, grad, scale)
    # CPU. Both paths get the log terms and the sigmoid from one log_sigmoid_forward (an exp
    # and a log1p per element, accurate in both tails) and its by-product e = exp(-|.|):
    # log_sigmoid_backward turns e into a sigmoid with a division instead of a second exp.
    a, b, e = scratch
    if pos_weight is None and in_range and y.is_contiguous():
        m = torch.sub(1, y, out=a)
        # With y in [0, 1] every y(1-y) >= 0, so the sum is 0 exactly when all labels are 0/1.
        if torch.dot(y.view(-1), m.view(-1)).item() == 0:
            return _hard_label_chunk(x, m, weight, grad, scale, b, e)
    # Soft labels or pos_weight. With t = log1p(e), e = exp(-|x|):
    # log_sigmoid_forward(|x|) = -t, and sigmoid(x) is log_sigmoid's derivative at -x.
    neg_t = b
    _LOG_SIGMOID(torch.abs(x, out=a), output=neg_t, buffer=e)
    if grad is not None:
        _LOG_SIGMOID_GRAD(_scalar(x, scale), torch.neg(x, out=a), e, grad_input=grad)
    loss = torch.clamp_min(x, 0, out=a)  # relu(x) - y*x + t, as in formulas.bcel_loss
    if pos_weight is None:
        if grad is not None:
            grad.sub_(y, alpha=scale)
        loss.addcmul_(y, x, value=-1).sub_(neg_t)
    else:
        pwy, lw = pos_weight_terms(pos_weight, y)
        if grad is not None:
            grad.mul_(lw).sub_(pwy, alpha=scale)
        loss.mul_(torch.sub(1, y)).addcmul_(pwy, torch.neg(x).clamp_min_(0))
        loss.addcmul_(lw, neg_t, value=-1)
    return _weighted_sum(loss, grad, weight)


def _hard_label_chunk(x: Tensor, m: Tensor, weight: Tensor | None, grad: Tensor | None,
                      scale: float, b: Tensor, e: Tensor) -> Tensor:
    """Labels that are all 0 or 1, given as m = 1 - y.

    With u = (1 - 2m) x, that is x for y = 1 and -x for y = 0, the loss is -logsigmoid(u)
    (for y = 1 torch's own expression; for y = 0 softplus(x); accurate in both tails) and its
    derivative w.r.t. x is -(1 - 2m) sigmoid(-u) = sigmoid(x) - y. Multiplying by 1 - 2m is
    exact here, so it is done with addcmul instead of materialising 1 - 2m. With the two
    checks, 8 passes over the chunk instead of the general kernel's 10; one exp and one log1p
    per element either way.
    """
    u = torch.addcmul(x, x, m, value=-2, out=b if grad is None else grad)
    log_sig = b if grad is not None else m  # m is not needed again without a gradient
    _LOG_SIGMOID(u, output=log_sig, buffer=e)
    if grad is not None:
        # -scale * sigmoid(-u), in place over u, then times (1 - 2m)
        _LOG_SIGMOID_GRAD(_scalar(x, -scale), u, e, grad_input=grad)
        grad.addcmul_(grad, m, value=-2)
    return _weighted_sum(log_sig, grad, weight).neg()


def _scalar(x: Tensor, value: float) -> Tensor:
    """A 0-d tensor of x's dtype holding ``value``; real CPU ones cached per thread (~1 us)."""
    cache = _SCRATCH.__dict__.setdefault("scalars", {})
    t = cache.get((value, x.dtype))
    if t is None:
        t = x.new_full((), value)
        if type(t) is Tensor and t.device.type == "cpu" and len(cache) < 64:
            cache[(value, x.dtype)] = t
    return t


def _bcel_chunk_plain(x: Tensor, y: Tensor, pos_weight: Tensor | None, weight: Tensor | None,
                      grad: Tensor | None, scale: float) -> Tensor:
    # Same arithmetic, same order, as formulas.bcel_loss and formulas.bcel_grad_input.
    t = torch.abs(x).neg_().exp_().log1p_()
    if pos_weight is None:
        if grad is not None:
            torch.sigmoid(x, out=grad).sub_(y)
        loss = torch.clamp_min(x, 0).addcmul_(y, x, value=-1).add_(t)
    else:
        pwy, lw = pos_weight_terms(pos_weight, y)
        if grad is not None:
            torch.sigmoid(x, out=grad).mul_(lw).sub_(pwy)
        loss = torch.sub(1, y).mul_(x.clamp_min(0)).addcmul_(pwy, torch.neg(x).clamp_min_(0))
        loss.addcmul_(lw, t)
    if grad is not None and scale != 1:
        grad.mul_(scale)
    return _weighted_sum(loss, grad, weight)


def scratch_tensors(numel: int, dtype: torch.dtype) -> list[Tensor]:
    """Three 1-d CPU tensors of ``numel`` elements, views of storage reused by later calls on
    this thread (up to ``_CHUNK`` elements; a larger request gets its own)."""
    cache = _SCRATCH.__dict__.setdefault("by_dtype", {})
    bufs = cache.get(dtype)
    if bufs is None or bufs[0].numel() < numel:
        # device given explicitly: a `with torch.device(...)` block must not redirect it
        bufs = [torch.empty(numel, dtype=dtype, device="cpu") for _ in range(3)]
        if numel <= _CHUNK and not tracing_or_transformed():
            cache[dtype] = bufs
    return [b[:numel] for b in bufs]


def plain_cpu(*tensors: Tensor | None) -> bool:
    """All given tensors are ordinary CPU tensors (no subclass such as FakeTensor) and nothing
    traces or transforms them: values can be read and scratch memory reused."""
    for t in tensors:
        if t is not None and (type(t) not in _PLAIN_TYPES or t.device.type != "cpu"):
            return False
    return not tracing_or_transformed()


def chunked_sum(kernel, x: Tensor, y: Tensor, extra: Tensor | None, weight: Tensor | None,
                grad_scale: float | None, checks: tuple) -> tuple[Tensor, Tensor | None]:
    """Sum of the weighted elementwise loss and, unless ``grad_scale`` is None, its gradient
    w.r.t. x times ``grad_scale``; plain CPU tensors only (see ``plain_cpu``).

    Works on slices along dim 0 so that each step touches about ``_CHUNK`` elements; weight and
    pos_weight are expanded views (no copies) sliced the same way. Range checks run per slice
    too, while it is in cache. ``checks`` is (function name, check the input's range, check
    the target's range, targets known to be in [0, 1]).
    """
    cdtype = _compute_dtype(x.dtype)
    n = x.numel()
    if 0 < n <= _CHUNK and x.dtype == cdtype:
        return _one_chunk(kernel, x, y, extra, weight, grad_scale, checks)
    x1 = x.unsqueeze(0) if x.dim() == 0 else x
    grad = None
    if grad_scale is not None:
        grad = torch.empty_like(x1, memory_format=torch.contiguous_format)
    rows, row_shape = x1.shape[0], x1.shape[1:]
    row_numel = math.prod(row_shape)
    step = min(max(rows, 1), max(1, _CHUNK // max(1, row_numel)))
    # scratch tensors shaped like a full chunk; the last one may be shorter
    bufs = [b.view(step, *row_shape) for b in scratch_tensors(step * row_numel, cdtype)]

    def pieces(t: Tensor | None):
        # split() makes all the views in one call; per-op dispatch is a real cost here, so a
        # single chunk (the usual minibatch) skips it.
        if t is None:
            return itertools.repeat(None)
        if t.shape != x1.shape:
            t = t.expand(x1.shape)
        return (t,) if step >= rows else t.split(step)

    def cast(t: Tensor | None) -> Tensor | None:
        return t if t is None or t.dtype == cdtype else t.to(cdtype)

    fn, check_input, check_target, in_range = checks
    scale = 1 if grad_scale is None else grad_scale
    partials = []
    for xc, yc, ec, wc, gc in zip(pieces(x1), pieces(y), pieces(extra), pieces(weight),
                                  pieces(grad), strict=False):
        if check_input:
            check_range_host(xc, "input (probabilities)", fn)
        if check_target:
            check_range_host(yc, "target", fn)
        xc, yc, ec, wc = cast(xc), cast(yc), cast(ec), cast(wc)
        scratch = bufs if len(xc) == step else [b[:len(xc)] for b in bufs]
        # The kernel writes the gradient straight into the result, unless it must be cast.
        g = gc if gc is None or gc.dtype == cdtype else torch.empty_like(xc)
        partials.append(kernel(xc, yc, ec, wc, g, scale, scratch, in_range))
        if g is not gc:
            gc.copy_(g)
    if grad is not None and grad.dim() != x.dim():
        grad = grad.view(x.shape)
    return _sum_of(partials, x, cdtype), grad


def _sum_of(partials: list[Tensor], x: Tensor, cdtype: torch.dtype) -> Tensor:
    """The chunks' partial sums added up (in float64 when there are several)."""
    if not partials:
        return x.new_zeros((), dtype=cdtype)
    if len(partials) == 1:
        return partials[0]
    return torch.stack(partials).sum(dtype=torch.float64).to(cdtype)


def _one_chunk(kernel, x: Tensor, y: Tensor, extra: Tensor | None, weight: Tensor | None,
               grad_scale: float | None, checks: tuple) -> tuple[Tensor, Tensor | None]:
    """``chunked_sum`` for one chunk needing no cast: the usual minibatch. The loop's kernels
    with fewer ops around them (at N=4096 ~1.5 us each; torch's whole loss takes ~30 us):
    cached scratch views, the logits target's range and 0/1 checks from one product, the
    probabilities' range check read off the result (see below)."""
    fn, check_input, check_target, in_range = checks
    grad = None
    if grad_scale is not None:
        grad = torch.empty_like(x, memory_format=torch.contiguous_format)
    scale = 1 if grad_scale is None else grad_scale
    scratch = _scratch_views(x)
    if kernel is bcel_chunk and check_target and extra is None:
        # q = y(1-y) is >= 0 exactly when y is in [0, 1] (NaN for a NaN), then all 0 exactly
        # when every label is 0 or 1 (see bcel_chunk's dot); amin + sum: 7 us at 65536, aminmax 11
        m, q, e = scratch
        torch.mul(y, torch.sub(1, y, out=m), out=q)
        if not q.amin().item() >= 0:
            check_range_host(y, "target", fn)  # raises, naming the range found
        elif q.sum().item() == 0:
            return _hard_label_chunk(x, m, weight, grad, scale, q, e), grad
        return kernel(x, y, extra, weight, grad, scale, scratch, False), grad
    if check_target and not _in_unit_range(y):
        if check_input:  # the input's error first, as the reference path raises it
            check_range_host(x, "input (probabilities)", fn)
        check_range_host(y, "target", fn)
    total = kernel(x, y, extra, weight, grad, scale, scratch, in_range)
    # With targets in [0, 1] (checked above, or not asked for) the probabilities loss is NaN
    # exactly when some p is outside [0, 1] or NaN (log or log1p of it is NaN, and the clamps,
    # products and sum keep a NaN), or a weight makes it so (inf * 0): only then read p.
    if check_input and math.isnan(total.item()):
        check_range_host(x, "input (probabilities)", fn)
    return total, grad


def _in_unit_range(t: Tensor) -> bool:
    lo, hi = (v.item() for v in torch.aminmax(t))
    return lo >= 0 and hi <= 1  # False for a NaN


def _scratch_views(x: Tensor) -> list[Tensor]:
    """``scratch_tensors`` shaped like ``x``, the views cached for the last shape seen."""
    key = (x.dtype, x.shape)
    last = getattr(_SCRATCH, "views", None)
    if last is not None and last[0] == key and last[1] is _SCRATCH.by_dtype.get(x.dtype):
        return last[2]
    scratch = scratch_tensors(x.numel(), x.dtype)
    if x.dim() != 1:
        scratch = [b.view(x.shape) for b in scratch]
    _SCRATCH.views = (key, _SCRATCH.by_dtype.get(x.dtype), scratch)
    return scratch


# Up to this many elements 0/1-label logits losses are cheaper as differentiable ops (autograd's
# C++ nodes) than as FusedLoss, a Python Function: 1.74 vs 1.90x torch at 4096, equal at 16384.
SMALL_HARD = 16384


def small_hard_label_loss(x: Tensor, y: Tensor, weight: Tensor | None, reduction: str,
                          fn: str) -> tuple[Tensor | None, bool]:
    """(loss, False) for a small real CPU minibatch (one chunk) of 0/1 targets, else (None,
    whether the targets still need their range check); the fused path's conditions hold.

    The loss is ``_hard_label_chunk``'s: -logsigmoid(u) with u = x(2y - 1), exactly +-x, so
    autograd's derivative is its -(2y - 1) sigmoid(-u) with the same rounding, and a graph of
    the backward comes for free. Target checks: a product and one aminmax (at this size
    cheaper than amin and sum)."""
    n = x.numel()
    if not 0 < n <= min(SMALL_HARD, _CHUNK) or x.dtype != _compute_dtype(x.dtype):
        return None, True
    m = torch.sub(1, y)
    lo, hi = (v.item() for v in torch.aminmax(torch.mul(y, m)))
    if not lo >= 0:
        check_range_host(y, "target", fn)  # raises, naming the range found
    if hi != 0:
        return None, False
    loss = torch.nn.functional.logsigmoid(x * torch.sub(y, m))
    loss = loss if weight is None else loss * weight
    return (loss.mean() if reduction == "mean" else loss.sum()).neg(), False


class FusedLoss(torch.autograd.Function):
    """Mean or sum of a loss whose input gradient is computed in the forward pass.

    Inputs: (input, target, extra, weight, reduction, kernel, reference, checks); ``extra``
    is pos_weight or None, only the input may need a gradient. ``reference(input, target,
    extra, weight, reduction)`` computes the same loss with differentiable ops; the backward
    differentiates it when a graph of the backward is wanted (create_graph=True) or the fused
    gradient was used up by an earlier backward over a retained graph.
    """

    @staticmethod
    def forward(ctx, x, y, extra, weight, reduction, kernel, reference, checks):
        n = x.numel()
        ctx.rest = (y, extra, weight, reduction, reference)
        ctx.save_for_backward(x)
        scale = None
        if ctx.needs_input_grad[0]:
            scale = 1 / max(n, 1) if reduction == "mean" else 1
        total, ctx.fused = chunked_sum(kernel, x, y, extra, weight, scale, checks)
        if reduction == "mean":
            total = total / n  # 0/0 = nan for an empty input, as torch gives
        return total if total.dtype == x.dtype else total.to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        if ctx.fused is not None and not torch.is_grad_enabled():
            fused, ctx.fused = ctx.fused, None  # used once: it is scaled in place
            if grad_out.item() != 1:
                fused.mul_(grad_out.to(fused.dtype))
            return fused, None, None, None, None, None, None, None
        (x,) = ctx.saved_tensors
        y, extra, weight, reduction, reference = ctx.rest
        create_graph = torch.is_grad_enabled()
        with torch.enable_grad():
            x_ = x if x.requires_grad else x.detach().requires_grad_()
            # The product's scalar sum, not grad_outputs=grad_out: the same gradient, and
            # torch imports its symbolic-shapes module (sympy, ~0.7 s) on the first call given
            # a gradient tensor, which was most of a float64 Newton finish's time.
            loss = (reference(x_, y, extra, weight, reduction) * grad_out).sum()
        (gx,) = torch.autograd.grad(loss, x_, create_graph=create_graph)
        return gx, None, None, None, None, None, None, None
