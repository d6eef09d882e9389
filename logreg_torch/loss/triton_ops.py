"""The Triton loss as torch custom operators, so that ``torch.compile(fullgraph=True)`` and
``torch.export`` see the kernels (``torch.library.triton_op``), with its backward
(``register_autograd``).

- ``logreg_torch::bce_forward``: one pass over input and target. It returns the loss, for
  mean/sum the gradient w.r.t. the input (when that needs one: written in the same pass, scaled
  for the reduction), and a device flag of the range checks, which ``loss`` asserts in the graph.
- ``logreg_torch::bce_backward``: the gradients asked for, recomputed from input and target.

Memory moved per element (float32 input and target): 8 bytes read, 4 written for the gradient.
``loss.backward()`` then costs one launch that reads the incoming gradient on the device and,
when it is 1, touches nothing; otherwise it scales the gradient in place. A 'none' reduction,
gradients w.r.t. target, weight or pos_weight, and a second backward over a retained graph
recompute instead. A backward that builds a graph (create_graph=True, double backward) is the
reference path's, differentiated by autograd. Kernel launches per call: forward 1, plus one that
finishes partial sums beyond 4096 elements, plus the assert when checking; backward 1.

Under a trace (compile, export, fake tensors) the loss calls the custom op; in plain eager mode
``_Eager``, an autograd Function with the same launches and the same backward, which saves
torch.library's dispatch in Python (most of the cost of a small call).

Imported on the first call with a CUDA tensor (``route``); importing it imports triton.
"""

import math

import torch
from torch import Tensor
from torch.library import triton_op
from torch.library import wrap_triton as _torch_wrap_triton
from triton.runtime.jit import JITFunction

from logreg_torch.loss.checks import range_message
from logreg_torch.loss.formulas import smooth
from logreg_torch.loss.reference import reference
from logreg_torch.loss.triton_kernels import (
    ABSENT,
    BLOCKED,
    EACH,
    SCALAR,
    loss_backward,
    loss_finish,
    loss_forward,
    loss_forward_plain,
    scale_in_place,
)
from logreg_torch.loss.triton_launch import Launcher
from logreg_torch.torch_compat import assert_async, is_fake, tracing_or_transformed

# Launch shapes. From register counts of the sm_90 builds, not yet from GPU timings:
# scripts/tune_gpu.py times the alternatives on a GPU and prints the lines to paste here.
# 2048 elements per program over 8 warps is 8 per thread (two 16-byte loads of each input),
# about 40 registers: up to 8 programs per SM.
BLOCK = 2048  # elements per program
NUM_WARPS = 8
ONE_BLOCK_MAX = 4096  # up to here one program does everything: no finishing kernel
FINISH_BLOCK = 4096  # partial sums per step of the finishing kernel (1e8 elements: 12 steps)
FINISH_WARPS = 8
SCALE_ITERS = 8  # blocks per program of scale_in_place: few programs when there is nothing to do
_PLAIN = (Tensor, torch.nn.Parameter)


def wrap_triton(kernel):
    """``torch.library.wrap_triton``; kernels of Triton's interpreter (CPU tensors, in tests)
    launch as they are (the wrapper of older torch refuses them), except on fake tensors (a
    trace: compile, export), which have no data to run on."""
    return _torch_wrap_triton(kernel) if isinstance(kernel, JITFunction) else _Interpreted(kernel)


class _Interpreted:
    def __init__(self, kernel):
        self.kernel = kernel

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            if not any(isinstance(a, Tensor) and is_fake(a) for a in args):
                self.kernel[grid](*args, **kwargs)
        return launch


def _pow2(n: int, least: int = 1) -> int:
    if type(n) is int:
        return max(least, 1 << (n - 1).bit_length())
    p = least  # a symbolic size (dynamic shapes): compare, as guards can
    while p < n:
        p *= 2
    return p


def broadcast_plan(t: Tensor | None, shape: torch.Size) -> tuple[Tensor | None, list[int]]:
    """How the kernels read a weight or pos_weight ``t`` that broadcasts to ``shape``:
    (the tensor they read, [mode, inner, period]). One value, one per element, or the sizes of a
    block of dims: element i reads ``t[(i // inner) % period]`` (a (C,) weight of an (N, C)
    input, an (N, 1) one...); other patterns read a copy expanded to the shape (autograd sums
    its gradient back)."""
    if t is None:
        return None, [ABSENT, 1, 1]
    if t.numel() == 1:
        return t, [SCALAR, 1, 1]
    sizes = [1] * (len(shape) - t.dim()) + list(t.shape)
    big = [i for i, s in enumerate(sizes) if s != 1]
    first, last = big[0], big[-1] + 1
    if t.is_contiguous() and all(sizes[i] == shape[i] for i in range(first, last)):
        inner, period = math.prod(shape[last:]), math.prod(shape[first:last])
        return t, ([EACH, 1, 1] if inner == 1 and period == math.prod(shape)
                   else [BLOCKED, inner, period])
    return t.expand(shape).contiguous(), [EACH, 1, 1]


def _operands(x: Tensor, weight: Tensor | None, pos_weight: Tensor | None,
              weight_plan: list[int], pos_weight_plan: list[int]) -> list:
    """The kernels' weight and pos_weight arguments: the two pointers (x standing in for an
    absent one), then inner and period of each."""
    return [x if weight is None else weight, x if pos_weight is None else pos_weight,
            weight_plan[1], weight_plan[2], pos_weight_plan[1], pos_weight_plan[2]]


# The launches. ``wrap_triton`` is a parameter: the custom ops pass torch's (compile and export
# trace the kernels through it; torch finds the kernels by reading this source, hence the name),
# eager calls pass ``_eager``: a ``triton_launch.Launcher`` per kernel (launched directly, with
# less host work than Triton's own launch; torch's wrapper would dispatch through a
# higher-order op, ~1 ms, outside an op's own body).
_LAUNCHERS = {k: Launcher(k) for k in (loss_forward, loss_forward_plain, loss_finish,
                                        loss_backward, scale_in_place)}


def _eager(kernel) -> Launcher:
    return _LAUNCHERS[kernel]


def launch_forward(input: Tensor, target: Tensor, weight: Tensor | None,
                   pos_weight: Tensor | None, logits: bool, reduction: str,
                   label_smoothing: float, check_input: bool, check_target: bool,
                   want_grad: bool, weight_plan: list[int], pos_weight_plan: list[int],
                   wrap_triton=wrap_triton) -> tuple[Tensor, Tensor, Tensor]:
    """(loss, d loss/d input or an empty tensor, ok flag or an empty tensor)."""
    n = input.numel()
    x, y = input.contiguous(), target.contiguous()
    reduce, check = reduction != "none", check_input or check_target
    one = n <= ONE_BLOCK_MAX
    nblocks = 1 if one else (n + BLOCK - 1) // BLOCK
    out = input.new_empty(() if reduce else x.shape)
    grad = torch.empty_like(x) if want_grad and reduce else input.new_empty(0)
    ok = input.new_empty(() if check else (0,), dtype=torch.int32)
    part = out if one or not reduce else input.new_empty(nblocks, dtype=torch.float32)
    flags = ok if one or not check else input.new_empty(nblocks, dtype=torch.int32)
    denom = float(n) if reduction == "mean" else 1.0
    # x stands in for the pointers a launch does not use (no empty tensors as arguments)
    gx, flag = grad if want_grad and reduce else x, flags if check else x
    shape = dict(LOGITS=logits, REDUCE=reduce, ONE_BLOCK=one, WRITE_GX=want_grad and reduce,
                 CHECK_X=check_input, CHECK_Y=check_target, BLOCK=_pow2(n, 16) if one else BLOCK,
                 num_warps=NUM_WARPS if n > 256 else 4)
    if weight is None and pos_weight is None and not label_smoothing:
        wrap_triton(loss_forward_plain)[(nblocks,)](x, y, part, gx, flag, n, denom, 1.0 / denom,
                                                    **shape)
    else:
        w, pw, *plans = _operands(x, weight, pos_weight, weight_plan, pos_weight_plan)
        wrap_triton(loss_forward)[(nblocks,)](
            x, y, w, pw, part, gx, flag, n, *plans, denom, 1.0 / denom, label_smoothing,
            W_MODE=weight_plan[0], PW_MODE=pos_weight_plan[0], SMOOTH=label_smoothing != 0,
            **shape)
    if not one and (reduce or check):
        wrap_triton(loss_finish)[(1,)](
            part if reduce else x, flags if check else x, out, ok if check else x, nblocks,
            denom, REDUCE=reduce, CHECK=check, ITERS=_pow2((nblocks + FINISH_BLOCK - 1)
                                                           // FINISH_BLOCK),
            BLOCK=FINISH_BLOCK, num_warps=FINISH_WARPS)
    return out, grad, ok


def launch_backward(grad_out: Tensor, input: Tensor, target: Tensor, weight: Tensor | None,
                    pos_weight: Tensor | None, logits: bool, reduction: str,
                    label_smoothing: float, weight_plan: list[int], pos_weight_plan: list[int],
                    need: list[bool], wrap_triton=wrap_triton
                    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per element: d/d(input), d/d(target) (their dtype), d/d(weight) and d/d(pos_weight)
    (float32, not yet summed to the operand's shape); empty where not asked for."""
    n = input.numel()
    x, y = input.contiguous(), target.contiguous()
    each = reduction == "none"
    g = grad_out.contiguous() if each else grad_out
    gx, gy = (torch.empty_like(t) if want else t.new_empty(0)
              for t, want in ((x, need[0]), (y, need[1])))
    gw, gpw = (x.new_empty(x.shape if want else (0,), dtype=torch.float32)
               for want in (need[2], need[3]))
    outs = [t if want else x for t, want in zip((gx, gy, gw, gpw), need, strict=True)]
    w, pw, *plans = _operands(x, weight, pos_weight, weight_plan, pos_weight_plan)
    wrap_triton(loss_backward)[((n + BLOCK - 1) // BLOCK,)](
        x, y, w, pw, g, *outs, n, *plans, 1.0 / n if reduction == "mean" else 1.0,
        label_smoothing, LOGITS=logits, W_MODE=weight_plan[0], PW_MODE=pos_weight_plan[0],
        SMOOTH=label_smoothing != 0, G_EACH=each, WANT_X=need[0], WANT_Y=need[1],
        WANT_W=need[2], WANT_PW=need[3], BLOCK=BLOCK, num_warps=NUM_WARPS)
    return gx, gy, gw, gpw


def launch_scale(grad: Tensor, g: Tensor, wrap_triton=_eager) -> Tensor:
    """grad * g in place on our own tensor (eager only), skipped on the device when g == 1."""
    n = grad.numel()
    per_program = SCALE_ITERS * BLOCK
    wrap_triton(scale_in_place)[((n + per_program - 1) // per_program,)](
        grad, g, n, ITERS=SCALE_ITERS, BLOCK=BLOCK, num_warps=NUM_WARPS)
    return grad


# The custom ops: what compile and export see.


@triton_op("logreg_torch::bce_forward", mutates_args=())
def bce_forward(input: Tensor, target: Tensor, weight: Tensor | None,
                pos_weight: Tensor | None, logits: bool, reduction: str,
                label_smoothing: float, check_input: bool, check_target: bool, want_grad: bool,
                weight_plan: list[int], pos_weight_plan: list[int]
                ) -> tuple[Tensor, Tensor, Tensor]:
    return launch_forward(input, target, weight, pos_weight, logits, reduction,
                          label_smoothing, check_input, check_target, want_grad, weight_plan,
                          pos_weight_plan)


@triton_op("logreg_torch::bce_backward", mutates_args=())
def bce_backward(grad_out: Tensor, input: Tensor, target: Tensor, weight: Tensor | None,
                 pos_weight: Tensor | None, logits: bool, reduction: str,
                 label_smoothing: float, weight_plan: list[int], pos_weight_plan: list[int],
                 need: list[bool]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return launch_backward(grad_out, input, target, weight, pos_weight, logits, reduction,
                           label_smoothing, weight_plan, pos_weight_plan, need)


def _setup_context(ctx, inputs, output) -> None:
    input, target, weight, pos_weight, logits, reduction, smoothing, _, _, want, wp, pwp = inputs
    ctx.set_materialize_grads(False)  # no zeros for the outputs nobody differentiates
    ctx.mark_non_differentiable(output[1], output[2])
    ctx.save_for_backward(input, target, weight, pos_weight)
    ctx.args = (logits, reduction, smoothing, wp, pwp)
    # An attribute, not a saved tensor: the backward hands it over (autograd then keeps it as
    # the .grad without a copy), and a second backward over a retained graph recomputes.
    ctx.grad = output[1] if want and reduction != "none" else None


def _sum_to(t: Tensor, operand: Tensor, plan: list[int]) -> Tensor:
    """A per-element gradient summed to the shape of the operand the kernels read."""
    if plan[0] == SCALAR:
        t = t.sum()
    elif plan[0] == BLOCKED:
        t = t.view(-1, plan[2], plan[1]).sum((0, 2))
    return t.reshape(operand.shape).to(operand.dtype)


def _gradients(ctx, grad_out: Tensor | None) -> list[Tensor | None]:
    """Gradients w.r.t. (input, target, weight, pos_weight), for the op's backward and the
    eager Function's: ``ctx`` holds the four tensors, ``args`` and ``grad`` (see
    ``_setup_context``)."""
    x, y, weight, pos_weight = ctx.saved_tensors
    logits, reduction, smoothing, wp, pwp = ctx.args
    need = list(ctx.needs_input_grad[:4])
    if grad_out is None or not any(need):
        return [None] * 4
    compiling = torch.compiler.is_compiling()
    if torch.is_grad_enabled() and not compiling:
        return _graph_of_backward(ctx, grad_out, need)
    grads: list[Tensor | None] = [None] * 4
    if need[0] and ctx.grad is not None:
        gx, ctx.grad = ctx.grad, None
        eager = type(gx) is Tensor and not compiling
        grads[0] = launch_scale(gx, grad_out) if eager else gx * grad_out.to(gx.dtype)
        need[0] = False
    if any(need):
        args = (grad_out, x, y, weight, pos_weight, logits, reduction, smoothing, wp, pwp, need)
        if type(x) in _PLAIN and not compiling:
            g = launch_backward(*args, wrap_triton=_eager)
        else:
            g = torch.ops.logreg_torch.bce_backward(*args)
        grads[0] = g[0] if need[0] else grads[0]
        grads[1] = g[1] if need[1] else None
        grads[2] = _sum_to(g[2], weight, wp) if need[2] else None
        grads[3] = _sum_to(g[3], pos_weight, pwp) if need[3] else None
    return grads


def _backward(ctx, grad_out: Tensor | None, *_):
    return (*_gradients(ctx, grad_out), *(None,) * 8)


def _graph_of_backward(ctx, grad_out: Tensor, need: list[bool]) -> list[Tensor | None]:
    """create_graph=True: the reference path's gradients, themselves differentiable."""
    x, y, weight, pos_weight = ctx.saved_tensors
    logits, reduction, smoothing, _, _ = ctx.args
    ctx.grad = None
    inputs = [t for t, want in zip((x, y, weight, pos_weight), need, strict=True) if want]
    with torch.enable_grad():
        target = smooth(y, smoothing) if smoothing else y
        loss = reference("logits" if logits else "probs", x, target, pos_weight, weight,
                         reduction)
        grads = iter(torch.autograd.grad(loss, inputs, grad_out, create_graph=True,
                                         allow_unused=True))
    return [next(grads) if want else None for want in need]


bce_forward.register_autograd(_backward, setup_context=_setup_context)


class _Eager(torch.autograd.Function):
    """The op's forward and backward in plain eager mode, without torch.library's dispatch in
    Python around them: the same launches, the same backward. Measured with the launches
    stubbed out (2-core CPU, N=4096, forward+backward): 161 us through the op, 64 us through
    this Function, 51 us for torch's own loss."""

    @staticmethod
    def forward(ctx, input, target, weight, pos_weight, args):
        logits, reduction, smoothing, check_input, check_target, wp, pwp = args
        want = ctx.needs_input_grad[0] and reduction != "none"
        out, grad, ok = launch_forward(input, target, weight, pos_weight, logits, reduction,
                                       smoothing, check_input, check_target, want, wp, pwp,
                                       wrap_triton=_eager)
        ctx.set_materialize_grads(False)
        ctx.mark_non_differentiable(ok)
        ctx.save_for_backward(input, target, weight, pos_weight)
        ctx.args = (logits, reduction, smoothing, wp, pwp)
        ctx.grad = grad if want else None
        return out, ok

    @staticmethod
    def backward(ctx, grad_out, _):
        return (*_gradients(ctx, grad_out), None)


EAGER_FUNCTION = True  # tests set False to run eager calls through the custom op


def loss(kind: str, input: Tensor, target: Tensor, weight: Tensor | None,
         pos_weight: Tensor | None, reduction: str, label_smoothing: float,
         check_input: bool, check_target: bool, fn: str) -> Tensor:
    """The loss through the kernels; arguments already validated (``functional``), weights of
    the input's dtype. Range checks: in the kernel, then one in-graph assert, no host sync.
    Traced (compile, export, fake tensors, dispatch modes): the custom op; plain eager: the
    same kernels through ``_Eager``."""
    weight, wp = broadcast_plan(weight, input.shape)
    pos_weight, pwp = broadcast_plan(pos_weight, input.shape)
    logits, smoothing = kind == "logits", float(label_smoothing)
    if (EAGER_FUNCTION and type(input) in _PLAIN and type(target) in _PLAIN
            and (weight is None or type(weight) in _PLAIN)
            and (pos_weight is None or type(pos_weight) in _PLAIN)
            and not tracing_or_transformed()):
        out, ok = _Eager.apply(input, target, weight, pos_weight, (
            logits, reduction, smoothing, check_input, check_target, wp, pwp))
    else:
        want_grad = torch.is_grad_enabled() and input.requires_grad
        out, _, ok = torch.ops.logreg_torch.bce_forward(
            input, target, weight, pos_weight, logits, reduction, smoothing, check_input,
            check_target, want_grad, wp, pwp)
    if check_input or check_target:
        assert_async(ok, _MESSAGES[fn, check_input, check_target])
    return out


# The range asserts' messages, made once (a small call builds little else).
_MESSAGES = {(fn, check_input, check_target): range_message(
    fn, ["input (probabilities)"] * check_input + ["target"] * check_target)
    for fn in ("binary_cross_entropy", "binary_cross_entropy_with_logits")
    for check_input in (False, True) for check_target in (False, True)}
