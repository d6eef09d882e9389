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
# Plain ints: the host code is traced by torch.compile, which cannot trace int() of a Triton
# constexpr (torch 2.11). The kernels compare their constexpr MODE arguments with the literals
# (Triton kernels may only read constexpr globals, and each one read costs a check per launch).
ABSENT, SCALAR, EACH, BLOCKED = 0, 1, 2, 3


@triton.jit
def _log1p(v):
    # log(1 + v), accurate for small v too, with one log: u = 1 + v rounds, and
    # log(u) * v / (u - 1) corrects for the rounding (Goldberg, "What every computer scientist
    # should know about floating-point arithmetic", thm. 4); v itself where u rounds to 1.
    # tl.log is libdevice's logf on a GPU (1 ulp, also near 1), numpy's under the interpreter.
    u = 1.0 + v
    um1 = u - 1.0
    return tl.where(um1 == 0.0, v, tl.log(u) * (v / tl.where(um1 == 0.0, 1.0, um1)))


@triton.jit
def _clamp_min(v, lo):
    return tl.where(v < lo, lo, v)  # a NaN stays NaN


@triton.jit
def _probs_terms(p, y):
    """(loss, d/dp, d/dy) of formulas.bce_loss: logs clamped at -100, p(1-p) floored at EPS.
    Two logs and two divisions per element (the memory floor allows about 40 instructions)."""
    log_p = _clamp_min(tl.log(p), -100.0)
    log_1mp = _clamp_min(_log1p(-p), -100.0)
    loss = (y - 1.0) * log_1mp - y * log_p
    grad_p = (p - y) / _clamp_min((1.0 - p) * p, 9.999999960041972e-13)
    return loss, grad_p, log_1mp - log_p


@triton.jit
def _logits_terms(x, y, pw, HAS_PW: tl.constexpr):
    """(loss, d/dx, d/dy, d/dpw) of formulas.bcel_loss (d/dpw is 0 without pos_weight)."""
    e = tl.exp(-tl.abs(x))
    u = 1.0 + e
    t = _log1p(e)  # softplus(-|x|)
    relu = tl.where(x > 0.0, x, 0.0)
    nrelu = tl.where(x < 0.0, -x, 0.0)
    sig = tl.where(x >= 0.0, 1.0, e) / u  # sigmoid(x), accurate in both tails
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
    """weight or pos_weight at the elements ``offs`` (MODE 1 one value, 2 one per element, 3 a
    block of dims)."""
    if MODE == 1:
        v = tl.load(ptr).to(tl.float32)
    elif MODE == 2:
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
    if W_MODE != 0:
        w = _operand(w_ptr, offs, mask, w_inner, w_period, W_MODE)
    if LOGITS:
        pw = 1.0
        if PW_MODE != 0:
            pw = _operand(pw_ptr, offs, mask, pw_inner, pw_period, PW_MODE)
        loss, gx, gy, gpw = _logits_terms(x, y, pw, PW_MODE != 0)
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
    """The forward pass with every option (see ``_forward``)."""
    _forward(x_ptr, y_ptr, w_ptr, pw_ptr, out_ptr, gx_ptr, flag_ptr, n, w_inner, w_period,
             pw_inner, pw_period, denom, grad_scale, smoothing, LOGITS, W_MODE, PW_MODE, SMOOTH,
             REDUCE, ONE_BLOCK, WRITE_GX, CHECK_X, CHECK_Y, BLOCK)


@triton.jit
def loss_forward_plain(x_ptr, y_ptr, out_ptr, gx_ptr, flag_ptr, n, denom, grad_scale,
                       LOGITS: tl.constexpr, REDUCE: tl.constexpr, ONE_BLOCK: tl.constexpr,
                       WRITE_GX: tl.constexpr, CHECK_X: tl.constexpr, CHECK_Y: tl.constexpr,
                       BLOCK: tl.constexpr):
    """The forward pass without weight, pos_weight or smoothing: the same code, with half the
    arguments to bind at each launch (a small call's time is its host work)."""
    _forward(x_ptr, y_ptr, x_ptr, x_ptr, out_ptr, gx_ptr, flag_ptr, n, 1, 1, 1, 1, denom,
             grad_scale, 0.0, LOGITS, 0, 0, False, REDUCE, ONE_BLOCK, WRITE_GX, CHECK_X, CHECK_Y,
             BLOCK)


@triton.jit
def _forward(x_ptr, y_ptr, w_ptr, pw_ptr, out_ptr, gx_ptr, flag_ptr, n, w_inner, w_period,
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
def _tile(x_ptr, rows, n, stride_n, col_offs, cmask):
    """The block of X at ``rows`` (all columns), float32; zeros past the last row."""
    return tl.load(x_ptr + rows[:, None] * stride_n + col_offs[None, :],
                   mask=(rows < n)[:, None] & cmask[None, :], other=0.0).to(tl.float32)


@triton.jit
def linear_loss_forward(x_ptr, w_ptr, b_ptr, y_ptr, pw_ptr, gz_ptr, part_ptr, n, d, stride_n,
                        stride_d, programs, scale, HAS_B: tl.constexpr, PW_MODE: tl.constexpr,
                        WRITE_GZ: tl.constexpr, CHECK_Y: tl.constexpr, ITERS: tl.constexpr,
                        BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, PREFETCH: tl.constexpr):
    """The full-batch value and gradient of mean BCE-with-logits of X w + b (D <= BLOCK_D).

    ``programs`` programs each take ITERS blocks of BLOCK_N rows, block i * programs + pid at
    step i (neighbouring programs read neighbouring rows at the same time). Each block of X is
    read once, into registers; the logits, the loss, g = sigmoid(z) - y (with pos_weight: the
    derivative of the weighted loss), g^T X and the target check come from those registers.
    With PREFETCH the next block's loads are issued before this block's sums, so that the
    memory system stays busy while the program reduces. Program p writes the row
    ``part_ptr[p, :d + 3] = scale * (loss sum, sum of g, 0, g^T X)``, the third entry
    being the count of targets outside [0, 1] instead (CHECK_Y; not scaled); the host sums the
    rows. WRITE_GZ also writes g per row (the features' gradient needs it). PW_MODE is 0
    (absent), 1 (one value) or 2 (one per row). Offsets are int64: a column-major X of 1e7 rows
    puts column 215 past 2**31 elements."""
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_D)
    cmask = cols < d
    col_offs = cols.to(tl.int64) * stride_d
    w = tl.load(w_ptr + cols, mask=cmask, other=0.0).to(tl.float32)
    b = 0.0
    if HAS_B:
        b = tl.load(b_ptr).to(tl.float32)
    pw = 1.0
    if PW_MODE == 1:
        pw = tl.load(pw_ptr).to(tl.float32)
    acc_w = tl.zeros([BLOCK_D], dtype=tl.float32)
    acc_loss = tl.zeros([BLOCK_N], dtype=tl.float32)
    acc_g = tl.zeros([BLOCK_N], dtype=tl.float32)
    bad = tl.zeros([BLOCK_N], dtype=tl.int32)
    rows = pid.to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    step = programs * BLOCK_N  # programs may be a constexpr 1 (Triton specializes ints of 1)
    if PREFETCH:
        xt = _tile(x_ptr, rows, n, stride_n, col_offs, cmask)
    for _ in range(ITERS):
        if PREFETCH:
            nxt = _tile(x_ptr, rows + step, n, stride_n, col_offs, cmask)
        else:
            xt = _tile(x_ptr, rows, n, stride_n, col_offs, cmask)
        rmask = rows < n
        z = tl.sum(xt * w[None, :], axis=1) + b
        y = tl.load(y_ptr + rows, mask=rmask, other=0.0).to(tl.float32)
        loss, g = _row_terms(z, y, pw, pw_ptr, rows, rmask, PW_MODE)
        acc_loss += tl.where(rmask, loss, 0.0)
        acc_g += g
        acc_w += tl.sum(xt * g[:, None], axis=0)
        if WRITE_GZ:
            tl.store(gz_ptr + rows, g.to(gz_ptr.dtype.element_ty), mask=rmask)
        if CHECK_Y:
            in_range = (y >= 0.0) & (y <= 1.0)  # False for a NaN
            bad += tl.where(in_range, 0, tl.where(rmask, 1, 0))
        rows += step
        if PREFETCH:
            xt = nxt
    row = part_ptr + pid.to(tl.int64) * (d + 3)
    tl.store(row, tl.sum(acc_loss, axis=0) * scale)
    tl.store(row + 1, tl.sum(acc_g, axis=0) * scale)
    tl.store(row + 2, tl.sum(bad, axis=0).to(tl.float32))
    tl.store(row + 3 + cols, acc_w * scale, mask=cmask)


@triton.jit
def _row_terms(z, y, pw, pw_ptr, rows, rmask, PW_MODE: tl.constexpr):
    """(loss, g) of the rows of one block, g zero past the last row; pos_weight ``pw`` (PW_MODE
    1) or read per row (PW_MODE 2)."""
    if PW_MODE == 2:
        pw_rows = tl.load(pw_ptr + rows, mask=rmask, other=0.0).to(tl.float32)
        loss, g, _, _ = _logits_terms(z, y, pw_rows, True)
    else:
        loss, g, _, _ = _logits_terms(z, y, pw, PW_MODE != 0)
    return loss, tl.where(rmask, g, 0.0)
