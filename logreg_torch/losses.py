"""Binary cross-entropy (log loss), written by hand.

Two pure functions that mirror ``torch.nn.functional`` and two thin ``nn.Module`` wrappers that
mirror ``torch.nn.BCELoss`` / ``torch.nn.BCEWithLogitsLoss``: same argument names, defaults,
shapes, broadcasting and exception types. The forward formulas and their gradients are our own
(``torch.autograd.Function`` with an analytic backward); no BCE kernel of torch is called.

Beyond torch:
- the probability version runs under ``torch.autocast`` (computes and returns float32);
- ``label_smoothing`` as Keras defines it: targets become ``y * (1 - eps) + eps / 2``;
- the logits version also rejects targets outside [0, 1]; ``check_range=False`` skips the range
  checks of both versions (one read of each tensor and a host sync; in the logits version the
  check also lets 0/1 targets take a shorter kernel, so there it saves nothing);
- gradients w.r.t. ``weight`` and ``pos_weight`` (torch raises "not differentiable").

Deliberate difference: at p = 0 or p = 1 exactly, torch's gradient w.r.t. the *target* is +-inf
(it uses -logit(p) unclamped); ours is the derivative of the clamped loss it returns, which is
finite (+-100). Everywhere else the two agree.
"""

from __future__ import annotations

import itertools
import math
import threading

import torch
from torch import Tensor, nn

__all__ = [
    "REDUCTIONS",
    "BCELoss",
    "BCEWithLogitsLoss",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
]

REDUCTIONS = ("none", "mean", "sum")
_LOG_MIN = -100.0  # torch clamps each log term here, so p = 0 or 1 gives a finite loss
# torch's floor on p(1-p) in the gradient, so it stays finite at p = 0 or 1. torch stores it as
# a float32 constant, 9.99999996e-13, which is what float64 parity needs.
_EPS = 9.999999960041972e-13
# Mean/sum are computed over chunks of this many elements: each chunk's temporaries stay in
# cache and reuse freed heap memory, instead of a dozen full-size tensors, each paying page
# faults for fresh memory (the dominant cost of eager elementwise code at 1e7 elements).
_CHUNK = 1 << 19
# log_sigmoid_forward(v) returns log(sigmoid(v)) and, on CPU, exp(-|v|) as a by-product;
# log_sigmoid_backward turns that by-product into a sigmoid with one division. Together they
# give the logits loss and its gradient from one exp and one log1p per element (see _bcel_chunk).
_LOG_SIGMOID = torch.ops.aten.log_sigmoid_forward.output
_LOG_SIGMOID_GRAD = torch.ops.aten.log_sigmoid_backward.grad_input
# Chunk-sized scratch tensors reused across calls, one set per thread: fresh memory for each
# call costs page faults comparable to the arithmetic itself.
_SCRATCH = threading.local()


# Elementwise formulas. Out of place and built from differentiable ops, so that autograd can
# differentiate the backward itself (gradgradcheck, create_graph=True).


def _bce_loss(p: Tensor, y: Tensor) -> Tensor:
    # The same expression and order as torch's kernel, for bitwise-close results.
    log_p = torch.log(p).clamp_min(_LOG_MIN)
    log_1mp = torch.log1p(-p).clamp_min(_LOG_MIN)
    return (y - 1) * log_1mp - y * log_p


def _bce_grad_input(p: Tensor, y: Tensor) -> Tensor:
    return (p - y) / ((1 - p) * p).clamp_min(_EPS)


def _bce_grad_target(p: Tensor) -> Tensor:
    return torch.log1p(-p).clamp_min(_LOG_MIN) - torch.log(p).clamp_min(_LOG_MIN)


def _softplus(x: Tensor) -> Tensor:
    """log(1 + exp(x)) without overflow, accurate in both tails."""
    return x.clamp_min(0) + torch.log1p(torch.exp(-x.abs()))


def _bcel_loss(x: Tensor, y: Tensor, pos_weight: Tensor | None) -> Tensor:
    # (1-y)*softplus(x) + pw*y*softplus(-x), arranged so that no two large terms cancel:
    # for hard labels relu(x) - y*x is exactly 0 or |x|, and the small log1p term is added last.
    # torch's (1-y)*x - logsigmoid(x) loses it: logit -40 with target 0 gives 0, not 4.2e-18.
    t = torch.log1p(torch.exp(-x.abs()))
    if pos_weight is None:
        return (x.clamp_min(0) - y * x) + t
    pwy = pos_weight * y
    return ((1 - y) * x.clamp_min(0) + pwy * (-x).clamp_min(0)) + (pwy + 1 - y) * t


def _bcel_grad_input(x: Tensor, y: Tensor, pos_weight: Tensor | None) -> Tensor:
    if pos_weight is None:
        return torch.sigmoid(x) - y
    pwy = pos_weight * y
    return (pwy + 1 - y) * torch.sigmoid(x) - pwy


def _bcel_grad_target(x: Tensor, pos_weight: Tensor | None) -> Tensor:
    if pos_weight is None:
        return -x
    return pos_weight * _softplus(-x) - _softplus(x)


# The same formulas for one chunk of the fused mean/sum path. They run inside
# Function.forward (no autograd), so they work in place on their own temporaries: fewer
# allocations and passes over memory. Each returns the chunk's weighted loss sum and, when
# ``grad`` is given, writes d(loss)/dx times ``scale`` into it. ``scratch`` is None or three
# tensors shaped like x that the kernel may overwrite; ``in_range`` says the targets are known
# to lie in [0, 1].


def _weighted_sum(loss: Tensor, grad: Tensor | None, weight: Tensor | None) -> Tensor:
    if weight is not None:
        loss = loss.mul_(weight)
        if grad is not None:
            grad.mul_(weight)
    return loss.sum()


def _pos_weight_terms(pos_weight: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """pw*y and pw*y + 1 - y: the weights of the log terms when pos_weight is given."""
    pwy = pos_weight * y
    return pwy, torch.add(pwy, 1).sub_(y)


def _bce_chunk(p: Tensor, y: Tensor, _: None, weight: Tensor | None, grad: Tensor | None,
               scale: float, scratch: list[Tensor] | None, in_range: bool) -> Tensor:
    # Same arithmetic, same order, as _bce_loss and _bce_grad_input.
    log_1mp = torch.neg(p).log1p_().clamp_min_(_LOG_MIN)
    log_p = torch.log(p).clamp_min_(_LOG_MIN)
    loss = torch.sub(y, 1).mul_(log_1mp).sub_(log_p.mul_(y))
    if grad is not None:
        torch.sub(p, y, out=grad).div_(torch.sub(1, p).mul_(p).clamp_min_(_EPS))
        if scale != 1:
            grad.mul_(scale)
    return _weighted_sum(loss, grad, weight)


def _bcel_chunk(x: Tensor, y: Tensor, pos_weight: Tensor | None, weight: Tensor | None,
                grad: Tensor | None, scale: float, scratch: list[Tensor] | None,
                in_range: bool) -> Tensor:
    if scratch is None:  # CUDA: plain ops, one kernel each
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
        _LOG_SIGMOID_GRAD(x.new_full((), scale), torch.neg(x, out=a), e, grad_input=grad)
    loss = torch.clamp_min(x, 0, out=a)  # relu(x) - y*x + t, as in _bcel_loss
    if pos_weight is None:
        if grad is not None:
            grad.sub_(y, alpha=scale)
        loss.addcmul_(y, x, value=-1).sub_(neg_t)
    else:
        pwy, lw = _pos_weight_terms(pos_weight, y)
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
        _LOG_SIGMOID_GRAD(x.new_full((), -scale), u, e, grad_input=grad)
        grad.addcmul_(grad, m, value=-2)
    return _weighted_sum(log_sig, grad, weight).neg()


def _bcel_chunk_plain(x: Tensor, y: Tensor, pos_weight: Tensor | None, weight: Tensor | None,
                      grad: Tensor | None, scale: float) -> Tensor:
    # Same arithmetic, same order, as _bcel_loss and _bcel_grad_input.
    t = torch.abs(x).neg_().exp_().log1p_()
    if pos_weight is None:
        if grad is not None:
            torch.sigmoid(x, out=grad).sub_(y)
        loss = torch.clamp_min(x, 0).addcmul_(y, x, value=-1).add_(t)
    else:
        pwy, lw = _pos_weight_terms(pos_weight, y)
        if grad is not None:
            torch.sigmoid(x, out=grad).mul_(lw).sub_(pwy)
        loss = torch.sub(1, y).mul_(x.clamp_min(0)).addcmul_(pwy, torch.neg(x).clamp_min_(0))
        loss.addcmul_(lw, t)
    if grad is not None and scale != 1:
        grad.mul_(scale)
    return _weighted_sum(loss, grad, weight)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # Half types are computed in float32 (as torch's own kernels do internally).
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _check_range(t: Tensor, name: str, fn: str) -> None:
    if t.numel() == 0:
        return
    lo, hi = (v.item() for v in torch.aminmax(t.detach()))  # a NaN propagates into both
    if lo != lo or hi != hi:
        raise RuntimeError(f"{fn}: {name} contains NaN; all elements must be in [0, 1]")
    if lo < 0 or hi > 1:
        raise RuntimeError(
            f"{fn}: all elements of {name} must be in [0, 1], found values in [{lo:g}, {hi:g}]"
        )


def _check_chunk(checks: tuple, x: Tensor, y: Tensor) -> None:
    fn, check_input, check_target, _ = checks
    if check_input:
        _check_range(x, "input (probabilities)", fn)
    if check_target:
        _check_range(y, "target", fn)


def _scratch(numel: int, dtype: torch.dtype) -> list[Tensor]:
    """Three 1-d CPU tensors of ``numel`` elements, views of storage reused by later calls on
    this thread (up to ``_CHUNK`` elements; a larger request gets its own)."""
    cache = _SCRATCH.__dict__.setdefault("by_dtype", {})
    bufs = cache.get(dtype)
    if bufs is None or bufs[0].numel() < numel:
        bufs = [torch.empty(numel, dtype=dtype) for _ in range(3)]
        if numel <= _CHUNK:
            cache[dtype] = bufs
    return [b[:numel] for b in bufs]


# Run eagerly under torch.compile: it keeps a thread-local cache of scratch tensors (no place
# for that inside a graph) and the range checks read values on the host anyway.
@torch.compiler.disable
def _chunked_sum(kernel, x: Tensor, y: Tensor, extra: Tensor | None, weight: Tensor | None,
                 grad_scale: float | None, checks: tuple) -> tuple[Tensor, Tensor | None]:
    """Sum of the weighted elementwise loss and, unless ``grad_scale`` is None, its gradient
    w.r.t. x times ``grad_scale``.

    Works on slices along dim 0 so that each step touches about ``_CHUNK`` elements; weight and
    pos_weight are expanded views (no copies) sliced the same way. Range checks run per slice
    too, while it is in cache. ``checks`` is (function name, check the input's range, check
    the target's range, targets known to be in [0, 1]).
    """
    x1 = x.unsqueeze(0) if x.dim() == 0 else x
    cdtype = _compute_dtype(x.dtype)
    grad = None
    if grad_scale is not None:
        grad = torch.empty_like(x1, memory_format=torch.contiguous_format)
    rows, row_shape = x1.shape[0], x1.shape[1:]
    plain = x.is_cuda  # one kernel per op is what a GPU wants
    step = max(rows, 1)
    if not plain:
        step = min(step, max(1, _CHUNK // max(1, math.prod(row_shape))))
        # scratch tensors shaped like a full chunk; the last one may be shorter
        bufs = [b.view(step, *row_shape)
                for b in _scratch(step * math.prod(row_shape), cdtype)]

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

    scale = 1 if grad_scale is None else grad_scale
    in_range = checks[3]
    partials = []
    for xc, yc, ec, wc, gc in zip(pieces(x1), pieces(y), pieces(extra), pieces(weight),
                                  pieces(grad), strict=False):
        _check_chunk(checks, xc, yc)
        xc, yc, ec, wc = cast(xc), cast(yc), cast(ec), cast(wc)
        scratch = None
        if not plain:
            scratch = bufs if len(xc) == step else [b[:len(xc)] for b in bufs]
        # The kernel writes the gradient straight into the result, unless it must be cast.
        g = gc if gc is None or gc.dtype == cdtype else torch.empty_like(xc)
        partials.append(kernel(xc, yc, ec, wc, g, scale, scratch, in_range))
        if g is not gc:
            gc.copy_(g)
    if not partials:
        total = x.new_zeros((), dtype=cdtype)
    elif len(partials) == 1:
        total = partials[0]
    else:
        total = torch.stack(partials).sum(dtype=torch.float64).to(cdtype)
    if grad is not None and grad.dim() != x.dim():
        grad = grad.view(x.shape)
    return total, grad


def _unbroadcast(grad: Tensor, like: Tensor) -> Tensor:
    return grad.sum_to_size(like.shape).to(like.dtype)


class _LossFunction(torch.autograd.Function):
    """Shared autograd plumbing for both losses.

    Inputs: (input, target, extra, weight, reduction, kind, checks). ``kind`` picks the
    formulas ("probs" or "logits"); ``extra`` is pos_weight for logits, None for
    probabilities; ``checks`` is as for ``_chunked_sum``.
    """

    @staticmethod
    def forward(ctx, x, y, extra, weight, reduction, kind, checks):
        loss_fn = _FORMULAS[kind][0]
        ctx.kind, ctx.reduction, ctx.numel = kind, reduction, x.numel()
        ctx.save_for_backward(x, y, extra, weight)
        ctx.fused = None
        if reduction == "none":
            _check_chunk(checks, x, y)
            cdtype = _compute_dtype(x.dtype)
            e = None if extra is None else extra.to(cdtype)
            loss = loss_fn(x.to(cdtype), y.to(cdtype), e)
            if weight is not None:
                loss = loss * weight.to(cdtype)
            return loss.to(x.dtype)
        # When only the input needs a gradient (the usual case), compute it in the same pass
        # over the data as the loss, already divided by N for "mean": then a plain
        # loss.backward() costs nothing more.
        fuse = ctx.needs_input_grad[0] and not any(ctx.needs_input_grad[1:4])
        scale = (1 / max(ctx.numel, 1) if reduction == "mean" else 1) if fuse else None
        total, ctx.fused = _chunked_sum(_FORMULAS[kind][4], x, y, extra, weight, scale, checks)
        if reduction == "mean":
            total = total / ctx.numel  # 0/0 = nan for an empty input, as torch gives
        return total.to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        # The fused gradient is a constant to autograd, so it is only used when no graph of
        # the backward is being built, and only once (it may be scaled in place).
        if ctx.fused is not None and not torch.is_grad_enabled():
            fused, ctx.fused = ctx.fused, None
            # Reading grad_out is a device sync on CUDA, so there it is always multiplied.
            if grad_out.is_cuda or grad_out.item() != 1:
                fused.mul_(grad_out.to(fused.dtype))
            return fused, None, None, None, None, None, None
        x, y, extra, weight = ctx.saved_tensors
        loss_fn, grad_fn, grad_target_fn, grad_extra_fn, _ = _FORMULAS[ctx.kind]
        scale = grad_out / ctx.numel if ctx.reduction == "mean" else grad_out
        cdtype = _compute_dtype(x.dtype)
        xc, yc = x.to(cdtype), y.to(cdtype)
        ec = None if extra is None else extra.to(cdtype)
        base = scale.to(cdtype)
        scale = base if weight is None else base * weight.to(cdtype)
        gx = gy = ge = gw = None
        if ctx.needs_input_grad[0]:
            gx = (grad_fn(xc, yc, ec) * scale).to(x.dtype)
        if ctx.needs_input_grad[1]:
            gy = (grad_target_fn(xc, ec) * scale).expand(x.shape).to(y.dtype)
        if ctx.needs_input_grad[2]:
            ge = _unbroadcast(grad_extra_fn(xc, yc) * scale, extra)
        if ctx.needs_input_grad[3]:
            gw = _unbroadcast(loss_fn(xc, yc, ec) * base, weight)
        return gx, gy, ge, gw, None, None, None


def _bcel_grad_pos_weight(x: Tensor, y: Tensor) -> Tensor:
    return y * _softplus(-x)


_FORMULAS = {
    # loss, d/dinput, d/dtarget, d/dextra, fused chunk kernel
    "probs": (lambda p, y, _: _bce_loss(p, y), lambda p, y, _: _bce_grad_input(p, y),
              lambda p, _: _bce_grad_target(p), None, _bce_chunk),
    "logits": (_bcel_loss, _bcel_grad_input, _bcel_grad_target, _bcel_grad_pos_weight,
               _bcel_chunk),
}


# Validation. Exception types follow torch's: ValueError for shapes and reduction,
# RuntimeError for dtypes, value ranges, broadcasting and label_smoothing.


def _check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(
            f"{reduction!r} is not a valid value for reduction; expected one of {REDUCTIONS}"
        )


def _check_label_smoothing(label_smoothing: float) -> None:
    if not 0.0 <= label_smoothing < 1.0:
        raise RuntimeError(f"label_smoothing must be in [0, 1), got {label_smoothing}")


def _check_broadcast(t: Tensor | None, name: str, input: Tensor, fn: str) -> None:
    if t is None:
        return
    try:
        ok = torch.broadcast_shapes(t.shape, input.shape) == input.shape
    except RuntimeError:
        ok = False
    if not ok:
        raise RuntimeError(
            f"{fn}: {name} of shape {tuple(t.shape)} does not broadcast to the input shape "
            f"{tuple(input.shape)}"
        )
    if t.device != input.device:
        raise RuntimeError(f"{fn}: {name} is on {t.device} but input is on {input.device}")


def _prepare(fn: str, input: Tensor, target: Tensor, weight: Tensor | None,
             pos_weight: Tensor | None, reduction: str, label_smoothing: float,
             check_range: bool, check_input: bool):
    """Validate what is cheap to validate; return (input, target, weight, pos_weight, checks).

    The [0, 1] range checks, which read the data, run later, chunk by chunk (see
    ``_chunked_sum``), unless label smoothing needs the raw targets checked first.
    """
    _check_reduction(reduction)
    _check_label_smoothing(label_smoothing)
    if not isinstance(input, Tensor) or not isinstance(target, Tensor):
        raise TypeError(f"{fn}: input and target must be tensors")
    if input.shape != target.shape:
        raise ValueError(
            f"{fn}: target shape {tuple(target.shape)} must be the same as input shape "
            f"{tuple(input.shape)}"
        )
    if torch.is_autocast_enabled(input.device.type):
        # Log loss needs float32 range and precision; do what autocast does for torch's
        # logits loss: compute in float32 and return float32.
        input, target = input.float(), target.float()
    if not input.is_floating_point():
        raise RuntimeError(f"{fn}: input must be a floating-point tensor, got {input.dtype}")
    if not target.is_floating_point():
        raise RuntimeError(
            f"{fn}: target must be a floating-point tensor of values in [0, 1], got "
            f"{target.dtype}; convert it with target.to({input.dtype})"
        )
    if target.dtype != input.dtype:
        raise RuntimeError(
            f"{fn}: target dtype {target.dtype} does not match input dtype {input.dtype}"
        )
    if target.device != input.device:
        raise RuntimeError(f"{fn}: target is on {target.device} but input is on {input.device}")
    _check_broadcast(weight, "weight", input, fn)
    _check_broadcast(pos_weight, "pos_weight", input, fn)
    check_target = check_range
    if label_smoothing:
        if check_range:  # check the targets the user gave, not the smoothed ones
            _check_range(target, "target", fn)
            check_target = False
        target = target * (1 - label_smoothing) + label_smoothing / 2
    # Like torch, weights of another float dtype are cast to the input's.
    if weight is not None:
        weight = weight.to(input.dtype)
    if pos_weight is not None:
        pos_weight = pos_weight.to(input.dtype)
    checks = (fn, check_range and check_input, check_target, check_range)
    return input, target, weight, pos_weight, checks


def _apply(input: Tensor, *args) -> Tensor:
    if torch.is_autocast_enabled(input.device.type):  # the inputs are float32 by now
        with torch.autocast(input.device.type, enabled=False):
            return _LossFunction.apply(input, *args)
    return _LossFunction.apply(input, *args)


def binary_cross_entropy(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    *,
    check_range: bool = True,
) -> Tensor:
    """Binary cross-entropy between probabilities ``input`` and ``target``, like
    ``torch.nn.functional.binary_cross_entropy``.

    Each log term is clamped at -100 as torch does, so p = 0 or 1 gives a finite loss and a
    finite gradient. ``weight`` broadcasts to the input shape. ``check_range=False`` skips the
    [0, 1] checks of input and target.
    """
    fn = "binary_cross_entropy"
    input, target, weight, _, checks = _prepare(fn, input, target, weight, None, reduction,
                                        label_smoothing, check_range, check_input=True)
    return _apply(input, target, None, weight, reduction, "probs", checks)


def binary_cross_entropy_with_logits(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    pos_weight: Tensor | None = None,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    *,
    check_range: bool = True,
) -> Tensor:
    """Binary cross-entropy on logits, like ``F.binary_cross_entropy_with_logits``.

    Stable for any logit magnitude and accurate in both tails. ``pos_weight`` multiplies the
    positive term and broadcasts to the input shape. Unlike torch, targets outside [0, 1] are
    an error unless ``check_range=False``.
    """
    fn = "binary_cross_entropy_with_logits"
    input, target, weight, pos_weight, checks = _prepare(fn, input, target, weight, pos_weight,
                                                 reduction, label_smoothing, check_range,
                                                 check_input=False)
    return _apply(input, target, pos_weight, weight, reduction, "logits", checks)


class BCELoss(nn.Module):
    """Drop-in for ``torch.nn.BCELoss``; ``weight`` is a buffer (moves with ``.to()``)."""

    def __init__(self, weight: Tensor | None = None, reduction: str = "mean",
                 label_smoothing: float = 0.0, *, check_range: bool = True) -> None:
        super().__init__()
        _check_reduction(reduction)
        _check_label_smoothing(label_smoothing)
        self.register_buffer("weight", weight)
        self.reduction = reduction
        self.label_smoothing = label_smoothing
        self.check_range = check_range

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return binary_cross_entropy(input, target, self.weight, self.reduction,
                                    self.label_smoothing, check_range=self.check_range)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, label_smoothing={self.label_smoothing}"


class BCEWithLogitsLoss(nn.Module):
    """Drop-in for ``torch.nn.BCEWithLogitsLoss``; ``weight`` and ``pos_weight`` are buffers."""

    def __init__(self, weight: Tensor | None = None, pos_weight: Tensor | None = None,
                 reduction: str = "mean", label_smoothing: float = 0.0, *,
                 check_range: bool = True) -> None:
        super().__init__()
        _check_reduction(reduction)
        _check_label_smoothing(label_smoothing)
        self.register_buffer("weight", weight)
        self.register_buffer("pos_weight", pos_weight)
        self.reduction = reduction
        self.label_smoothing = label_smoothing
        self.check_range = check_range

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return binary_cross_entropy_with_logits(
            input, target, self.weight, self.pos_weight, self.reduction, self.label_smoothing,
            check_range=self.check_range,
        )

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, label_smoothing={self.label_smoothing}"
