"""The Triton kernels of the losses, and of the fused linear + loss of ``logreg_torch.fast``.

Each computes the expressions of ``formulas.py`` in float32 registers, whatever the storage dtype
(float32, bfloat16, float16). Only core ``triton.language`` operations that exist in Triton 3.2
and later, so that the same source runs compiled on a GPU and under Triton's interpreter on CPU
tensors (``TRITON_INTERPRET=1``: how the tests run them without a GPU). The interpreter has no
libdevice, so log1p is written out below from ``tl.log``; clamps are ``tl.where`` so that a NaN
stays a NaN, as torch's clamps keep it.

Host code: ``triton_ops`` (the loss, as torch custom ops) and ``triton_linear`` (fast.py's
full-batch epoch). Importing this module imports triton; nothing on a CPU run does.
"""

import triton
import triton.language as tl

# Operand modes of weight and pos_weight (the host picks one, see triton_ops.broadcast_plan):
# absent, one value, one per element, or broadcast along one block of dims: (i // inner) % period.
ABSENT = tl.constexpr(0)
SCALAR = tl.constexpr(1)
EACH = tl.constexpr(2)
BLOCKED = tl.constexpr(3)


@triton.jit
def _log1p(v):
    # log(1 + v), accurate for small v too: 2 atanh(s) with s = v / (2 + v) for |v| < 1/2
    # (|s| <= 1/3: seven terms of the odd series reach float32 precision), else log(1 + v),
    # where rounding 1 + v costs nothing that matters.
    s = v / (2.0 + v)
    s2 = s * s
    p = s2 * (1.0 / 13.0) + (1.0 / 11.0)
    p = p * s2 + (1.0 / 9.0)
    p = p * s2 + (1.0 / 7.0)
    p = p * s2 + (1.0 / 5.0)
    p = p * s2 + (1.0 / 3.0)
    p = p * s2 + 1.0
    return tl.where(tl.abs(v) < 0.5, 2.0 * s * p, tl.log(1.0 + v))


@triton.jit
def _log(p):
    # log(p), accurate near p = 1 too (a tiny loss for a confident right answer): there it is
    # log1p(p - 1), and p - 1 is exact for p >= 1/2
    return tl.where(p > 0.5, _log1p(p - 1.0), tl.log(p))


@triton.jit
def _clamp_min(v, lo):
    return tl.where(v < lo, lo, v)  # a NaN stays NaN


@triton.jit
def _probs_terms(p, y):
    """(loss, d/dp, d/dy) of formulas.bce_loss: logs clamped at -100, p(1-p) floored at EPS."""
    log_p = _clamp_min(_log(p), -100.0)
    log_1mp = _clamp_min(_log1p(-p), -100.0)
    loss = (y - 1.0) * log_1mp - y * log_p
    grad_p = (p - y) / _clamp_min((1.0 - p) * p, 9.999999960041972e-13)
    return loss, grad_p, log_1mp - log_p


@triton.jit
def _logits_terms(x, y, pw, HAS_PW: tl.constexpr):
    """(loss, d/dx, d/dy, d/dpw) of formulas.bcel_loss (d/dpw is 0 without pos_weight)."""
    e = tl.exp(-tl.abs(x))
    t = _log1p(e)  # softplus(-|x|)
    relu = tl.where(x > 0.0, x, 0.0)
    nrelu = tl.where(x < 0.0, -x, 0.0)
    sig = tl.where(x >= 0.0, 1.0, e) / (1.0 + e)  # sigmoid(x), accurate in both tails
    if HAS_PW:
        pwy = pw * y
        lw = pwy + 1.0 - y
        loss = ((1.0 - y) * relu + pwy * nrelu) + lw * t
        grad_x = lw * sig - pwy
        grad_y = pw * (nrelu + t) - (relu + t)
        grad_pw = y * (nrelu + t)
    else:
        loss = (relu - y * x) + t
        grad_x = sig - y
        grad_y = -x
        grad_pw = grad_y * 0.0
    return loss, grad_x, grad_y, grad_pw


@triton.jit
def _operand(ptr, offs, mask, inner, period, MODE: tl.constexpr):
    """weight or pos_weight at the elements ``offs`` (MODE SCALAR, EACH or BLOCKED)."""
    if MODE == SCALAR:
        v = tl.load(ptr).to(tl.float32)
    elif MODE == EACH:
        v = tl.load(ptr + offs, mask=mask, other=0.0).to(tl.float32)
    else:
        v = tl.load(ptr + (offs // inner) % period, mask=mask, other=0.0).to(tl.float32)
    return v


@triton.jit
def _elements(x_ptr, y_ptr, w_ptr, pw_ptr, offs, mask, w_inner, w_period, pw_inner, pw_period,
              smoothing, LOGITS: tl.constexpr, W_MODE: tl.constexpr, PW_MODE: tl.constexpr,
              SMOOTH: tl.constexpr):
    """Load one block and return (x, y as given, weight, loss, d/dx, d/dy, d/dpw), unweighted
    and before scaling; the derivatives w.r.t. the smoothed target, times (1 - smoothing)."""
    x = tl.load(x_ptr + offs, mask=mask, other=0.5).to(tl.float32)
    y_in = tl.load(y_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    y = y_in
    if SMOOTH:
        y = y_in * (1.0 - smoothing) + smoothing * 0.5
    w = 1.0
    if W_MODE != ABSENT:
        w = _operand(w_ptr, offs, mask, w_inner, w_period, W_MODE)
    if LOGITS:
        pw = 1.0
        if PW_MODE != ABSENT:
            pw = _operand(pw_ptr, offs, mask, pw_inner, pw_period, PW_MODE)
        loss, gx, gy, gpw = _logits_terms(x, y, pw, PW_MODE != ABSENT)
    else:
        loss, gx, gy = _probs_terms(x, y)
        gpw = gy * 0.0
    if SMOOTH:
        gy = gy * (1.0 - smoothing)
    return x, y_in, w, loss, gx, gy, gpw


@triton.jit
def _n_bad(x, y, mask, CHECK_X: tl.constexpr, CHECK_Y: tl.constexpr):
    """How many of the block's elements fail the [0, 1] checks (a NaN fails them)."""
    ok = mask == mask
    if CHECK_X:
        ok = ok & (x >= 0.0) & (x <= 1.0)
    if CHECK_Y:
        ok = ok & (y >= 0.0) & (y <= 1.0)
    bad = tl.where(ok, 0, 1)
    return tl.sum(tl.where(mask, bad, 0), axis=0)


@triton.jit
def loss_forward(x_ptr, y_ptr, w_ptr, pw_ptr, out_ptr, gx_ptr, flag_ptr, n, w_inner, w_period,
                 pw_inner, pw_period, denom, grad_scale, smoothing, LOGITS: tl.constexpr,
                 W_MODE: tl.constexpr, PW_MODE: tl.constexpr, SMOOTH: tl.constexpr,
                 REDUCE: tl.constexpr, ONE_BLOCK: tl.constexpr, WRITE_GX: tl.constexpr,
                 CHECK_X: tl.constexpr, CHECK_Y: tl.constexpr, BLOCK: tl.constexpr):
    """One pass over input and target. REDUCE (mean/sum): the block's weighted loss sum into
    ``out_ptr[pid]`` (float32), or, for ONE_BLOCK, the result divided by ``denom`` into
    ``out_ptr[0]``; with WRITE_GX, d(result)/dx (times ``grad_scale`` = 1/denom) into
    ``gx_ptr``. Otherwise ('none') the weighted loss of each element into ``out_ptr``. With a
    check, the block's count of out-of-range elements into ``flag_ptr[pid]`` (ONE_BLOCK: 1 if
    there were none, else 0, ready for the assert)."""
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x, y, w, loss, gx, _, _ = _elements(x_ptr, y_ptr, w_ptr, pw_ptr, offs, mask, w_inner,
                                        w_period, pw_inner, pw_period, smoothing, LOGITS,
                                        W_MODE, PW_MODE, SMOOTH)
    loss = loss * w
    if REDUCE:
        total = tl.sum(tl.where(mask, loss, 0.0), axis=0)
        if ONE_BLOCK:
            tl.store(out_ptr, (total / denom).to(out_ptr.dtype.element_ty))
        else:
            tl.store(out_ptr + pid, total)
        if WRITE_GX:
            tl.store(gx_ptr + offs, (gx * (w * grad_scale)).to(gx_ptr.dtype.element_ty),
                     mask=mask)
    else:
        tl.store(out_ptr + offs, loss.to(out_ptr.dtype.element_ty), mask=mask)
    if CHECK_X or CHECK_Y:
        bad = _n_bad(x, y, mask, CHECK_X, CHECK_Y)
        if ONE_BLOCK:
            tl.store(flag_ptr, tl.where(bad == 0, 1, 0))
        else:
            tl.store(flag_ptr + pid, bad)


@triton.jit
def loss_finish(part_ptr, flag_ptr, out_ptr, ok_ptr, nblocks, denom, REDUCE: tl.constexpr,
                CHECK: tl.constexpr, ITERS: tl.constexpr, BLOCK: tl.constexpr):
    """One program: the blocks' partial sums, in a fixed order (the same result every run),
    divided by ``denom`` into ``out_ptr[0]``; and 1 into ``ok_ptr[0]`` if no block counted an
    out-of-range element, else 0. ITERS * BLOCK >= nblocks. (Loop bounds are constexpr here and
    below: Triton 3.6's interpreter cannot loop to a runtime bound.)"""
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    bad = tl.zeros([BLOCK], dtype=tl.int32)
    for i in range(ITERS):
        offs = i * BLOCK + tl.arange(0, BLOCK)
        m = offs < nblocks
        if REDUCE:
            acc += tl.load(part_ptr + offs, mask=m, other=0.0)
        if CHECK:
            bad += tl.load(flag_ptr + offs, mask=m, other=0)
    if REDUCE:
        tl.store(out_ptr, (tl.sum(acc, axis=0) / denom).to(out_ptr.dtype.element_ty))
    if CHECK:
        tl.store(ok_ptr, tl.where(tl.sum(bad, axis=0) == 0, 1, 0))


@triton.jit
def loss_backward(x_ptr, y_ptr, w_ptr, pw_ptr, g_ptr, gx_ptr, gy_ptr, gw_ptr, gpw_ptr, n,
                  w_inner, w_period, pw_inner, pw_period, grad_scale, smoothing,
                  LOGITS: tl.constexpr, W_MODE: tl.constexpr, PW_MODE: tl.constexpr,
                  SMOOTH: tl.constexpr, G_EACH: tl.constexpr, WANT_X: tl.constexpr,
                  WANT_Y: tl.constexpr, WANT_W: tl.constexpr, WANT_PW: tl.constexpr,
                  BLOCK: tl.constexpr):
    """The gradients asked for, recomputed from input and target, times the incoming gradient
    (one value, or one per element for 'none') and ``grad_scale``. Those w.r.t. weight and
    pos_weight are per element, in float32; the host sums them to the operand's shape."""
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    _, _, w, loss, gx, gy, gpw = _elements(x_ptr, y_ptr, w_ptr, pw_ptr, offs, mask, w_inner,
                                           w_period, pw_inner, pw_period, smoothing, LOGITS,
                                           W_MODE, PW_MODE, SMOOTH)
    if G_EACH:
        g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32) * grad_scale
    else:
        g = tl.load(g_ptr).to(tl.float32) * grad_scale
    if WANT_X:
        tl.store(gx_ptr + offs, (gx * (w * g)).to(gx_ptr.dtype.element_ty), mask=mask)
    if WANT_Y:
        tl.store(gy_ptr + offs, (gy * (w * g)).to(gy_ptr.dtype.element_ty), mask=mask)
    if WANT_W:
        tl.store(gw_ptr + offs, loss * g, mask=mask)
    if WANT_PW:
        tl.store(gpw_ptr + offs, gpw * (w * g), mask=mask)


@triton.jit
def scale_in_place(g_ptr, s_ptr, n, ITERS: tl.constexpr, BLOCK: tl.constexpr):
    """g *= s, where s is one value on the device, ITERS * BLOCK elements per program; nothing
    is read or written when s == 1 (the usual ``loss.backward()``), and no host sync is needed
    to know it."""
    s = tl.load(s_ptr).to(tl.float32)
    if s != 1.0:
        start = tl.program_id(0).to(tl.int64) * (ITERS * BLOCK)
        for i in range(ITERS):
            offs = start + i * BLOCK + tl.arange(0, BLOCK)
            m = offs < n
            v = tl.load(g_ptr + offs, mask=m, other=0.0).to(tl.float32)
            tl.store(g_ptr + offs, (v * s).to(g_ptr.dtype.element_ty), mask=m)


@triton.jit
def linear_loss_forward(x_ptr, w_ptr, b_ptr, y_ptr, pw_ptr, gz_ptr, part_ptr, flag_ptr, n, d,
                        stride_n, stride_d, HAS_B: tl.constexpr, PW_MODE: tl.constexpr,
                        WRITE_GZ: tl.constexpr, CHECK_Y: tl.constexpr, ITERS: tl.constexpr,
                        BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """The full-batch value and gradient of mean BCE-with-logits of X w + b, times n.

    Program p takes ITERS blocks of BLOCK_N rows from row p * ITERS * BLOCK_N. Each block of X
    is read once, into registers; the logits, the loss, g = sigmoid(z) - y (with pos_weight:
    the derivative of the weighted loss) and g^T X come from those registers. Program p writes
    ``part_ptr[p, :] = (loss sum, sum of g, g^T X)`` (row length BLOCK_D + 2; the host sums
    the rows); WRITE_GZ also writes g per row (the features' gradient needs it), CHECK_Y the
    count of targets outside [0, 1] into ``flag_ptr[p]``. PW_MODE is ABSENT, SCALAR or EACH
    (one per row)."""
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_D)
    cmask = cols < d
    w = tl.load(w_ptr + cols, mask=cmask, other=0.0).to(tl.float32)
    b = 0.0
    if HAS_B:
        b = tl.load(b_ptr).to(tl.float32)
    pw = 1.0
    if PW_MODE == SCALAR:
        pw = tl.load(pw_ptr).to(tl.float32)
    acc_w = tl.zeros([BLOCK_D], dtype=tl.float32)
    acc_loss = tl.zeros([BLOCK_N], dtype=tl.float32)
    acc_g = tl.zeros([BLOCK_N], dtype=tl.float32)
    bad = tl.zeros([BLOCK_N], dtype=tl.int32)
    first = pid.to(tl.int64) * (ITERS * BLOCK_N)
    for i in range(ITERS):
        rows = first + i * BLOCK_N + tl.arange(0, BLOCK_N)
        rmask = rows < n
        xt = tl.load(x_ptr + rows[:, None] * stride_n + cols[None, :] * stride_d,
                     mask=rmask[:, None] & cmask[None, :], other=0.0).to(tl.float32)
        z = tl.sum(xt * w[None, :], axis=1) + b
        y = tl.load(y_ptr + rows, mask=rmask, other=0.0).to(tl.float32)
        if PW_MODE == EACH:
            pw_rows = tl.load(pw_ptr + rows, mask=rmask, other=0.0).to(tl.float32)
            loss, g, _, _ = _logits_terms(z, y, pw_rows, True)
        else:
            loss, g, _, _ = _logits_terms(z, y, pw, PW_MODE != ABSENT)
        g = tl.where(rmask, g, 0.0)
        acc_loss += tl.where(rmask, loss, 0.0)
        acc_g += g
        acc_w += tl.sum(xt * g[:, None], axis=0)
        if WRITE_GZ:
            tl.store(gz_ptr + rows, g.to(gz_ptr.dtype.element_ty), mask=rmask)
        if CHECK_Y:
            in_range = (y >= 0.0) & (y <= 1.0)  # False for a NaN
            bad += tl.where(in_range, 0, tl.where(rmask, 1, 0))
    row = part_ptr + pid * (BLOCK_D + 2)
    tl.store(row, tl.sum(acc_loss, axis=0))
    tl.store(row + 1, tl.sum(acc_g, axis=0))
    tl.store(row + 2 + cols, acc_w, mask=cmask)
    if CHECK_Y:
        tl.store(flag_ptr + pid, tl.sum(bad, axis=0))
