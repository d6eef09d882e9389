"""The Triton loss (logreg_torch/loss/triton_ops.py, triton_kernels.py) against the path without
kernels, in the same harness: values and gradients for every option, odd sizes, range errors,
which calls fall back, and on a GPU compile, export and no host sync.

The same tests run on CUDA tensors on a GPU, and on CPU tensors under Triton's interpreter in a
fresh process (``tests/test_triton_kernels.py`` starts it with ``TRITON_INTERPRET=1``, which has
to be set before triton is first imported). Elsewhere this module is skipped as a whole.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
if not INTERPRETED and not (torch.cuda.is_available()
                            and importlib.util.find_spec("triton") is not None):
    pytest.skip("runs on a GPU, or under Triton's interpreter in the fresh process that "
                "tests/test_triton_kernels.py starts", allow_module_level=True)

from logreg_torch.loss import (  # noqa: E402
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    route,
    triton_ops,
)

DEVICE = "cpu" if INTERPRETED else "cuda"
# On a GPU every test here is a GPU test: `pytest -m cuda` selects them with the others.
pytestmark = [] if INTERPRETED else [pytest.mark.cuda]
KINDS = ["probs", "logits"]
REDUCTIONS = ["mean", "sum", "none"]


def on_kernels(grad_fn_name):
    """The grad_fn of a loss the kernels computed: triton_ops._Eager's in eager mode, the
    custom op's (its register_autograd backward) when traced or forced."""
    return grad_fn_name in ("_EagerBackward",
                            "GeneratedBackwardFor_logreg_torch_bce_forward_defaultBackward")
compiled_only = pytest.mark.skipif(INTERPRETED, reason="compiled kernels only: this process "
                                   "runs Triton's interpreter")


@pytest.fixture(autouse=True)
def _kernels_here(monkeypatch):
    if INTERPRETED:
        monkeypatch.setattr(route, "CPU_INTERPRETER", True)


def _data(kind, shape, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    if kind == "probs":
        x = torch.rand(shape, generator=gen) * 0.98 + 0.01
    else:
        x = torch.randn(shape, generator=gen) * 4
    y = torch.rand(shape, generator=gen)
    return x.to(DEVICE, dtype), y.to(DEVICE, dtype)


def _run(kind, x, y, weight=None, pos_weight=None, wrt=("input",), grad_out=None, **kwargs):
    """(loss, gradients w.r.t. ``wrt``, grad_fn name) of our loss on fresh leaves."""
    given = {"input": x, "target": y, "weight": weight, "pos_weight": pos_weight}
    leaves = {k: None if t is None else t.detach().clone().requires_grad_(k in wrt)
              for k, t in given.items()}
    if kind == "probs":
        loss = binary_cross_entropy(leaves["input"], leaves["target"], leaves["weight"],
                                    **kwargs)
    else:
        loss = binary_cross_entropy_with_logits(leaves["input"], leaves["target"],
                                                leaves["weight"], leaves["pos_weight"],
                                                **kwargs)
    g = torch.ones_like(loss) if grad_out is None else grad_out
    grads = torch.autograd.grad(loss, [leaves[k] for k in wrt], g) if wrt else ()
    return loss.detach(), grads, loss.grad_fn.name() if loss.grad_fn else ""


def _both(monkeypatch, *args, **kwargs):
    """The kernels' result, then the result of the path without them."""
    ours = _run(*args, **kwargs)
    with monkeypatch.context() as m:
        m.setattr(route, "ENABLED", False)
        reference = _run(*args, **kwargs)
    assert on_kernels(ours[2]) and not on_kernels(reference[2]), (ours[2], reference[2])
    return ours, reference


def _assert_close(a, b, rtol=2e-5, atol=2e-6):
    torch.testing.assert_close(a[0], b[0], rtol=rtol, atol=atol)
    assert len(a[1]) == len(b[1])
    for u, v in zip(a[1], b[1], strict=True):
        torch.testing.assert_close(u, v, rtol=rtol, atol=atol)


# Weight / pos_weight shapes for an input of shape (6, 5, 7): each broadcast pattern the kernels
# read in place (one value, each element, a block of trailing or leading dims) or as a copy.
SHAPES = {"scalar": (1,), "each": (6, 5, 7), "last": (7,), "rows": (6, 1, 1),
          "middle": (5, 1), "gapped": (6, 1, 7)}
CASES = ["plain", *[f"weight-{s}" for s in SHAPES], "smoothing", "all-gradients"]
KIND_CASES = [(kind, case) for kind in KINDS for case in CASES] + [
    ("logits", "pos_weight-last"), ("logits", "pos_weight-each")]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(("kind", "case"), KIND_CASES)
def test_every_option_matches_the_path_without_kernels(kind, case, reduction, monkeypatch):
    x, y = _data(kind, (6, 5, 7))
    gen = torch.Generator().manual_seed(1)
    kwargs, wrt = {"reduction": reduction}, ["input"]
    if case.startswith("weight-"):
        kwargs["weight"] = (torch.rand(SHAPES[case[7:]], generator=gen) + 0.5).to(DEVICE)
        wrt.append("weight")
    if case.startswith("pos_weight-"):
        kwargs["pos_weight"] = (torch.rand(SHAPES[case[11:]], generator=gen) * 3).to(DEVICE)
        wrt.append("pos_weight")
    if case == "smoothing":
        kwargs["label_smoothing"] = 0.2
        wrt.append("target")
    if case == "all-gradients":
        kwargs["weight"] = (torch.rand(7, generator=gen) + 0.5).to(DEVICE)
        kwargs["label_smoothing"] = 0.1
        wrt = ["input", "target", "weight"]
        if kind == "logits":
            kwargs["pos_weight"] = (torch.rand(5, 1, generator=gen) * 3).to(DEVICE)
            wrt.append("pos_weight")
    ours, reference = _both(monkeypatch, kind, x, y, wrt=tuple(wrt), **kwargs)
    _assert_close(ours, reference)


@pytest.mark.parametrize("case", ["plain", "weight-last", "all-gradients"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kind", KINDS)
def test_the_custom_op_in_eager_mode_too(kind, reduction, case, monkeypatch):
    """Eager calls take triton_ops._Eager; traced ones the op, whose own backward (through
    register_autograd) runs here in eager mode."""
    monkeypatch.setattr(triton_ops, "EAGER_FUNCTION", False)
    test_every_option_matches_the_path_without_kernels(kind, case, reduction, monkeypatch)
    x, y = _data(kind, (40,))
    assert "GeneratedBackwardFor_logreg_torch_bce_forward" in _run(kind, x, y)[2]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kind", KINDS)
def test_values_and_gradients_match_torch(kind, reduction):
    x, y = _data(kind, (300,))
    w = torch.rand(300, device=DEVICE)
    ours = _run(kind, x, y, w, reduction=reduction)
    assert on_kernels(ours[2])
    xt = x.clone().requires_grad_()
    if kind == "probs":
        theirs = F.binary_cross_entropy(xt, y, w, reduction=reduction)
    else:
        theirs = F.binary_cross_entropy_with_logits(xt, y, w, reduction=reduction)
    grad = torch.autograd.grad(theirs, xt, torch.ones_like(theirs))
    _assert_close(ours, (theirs.detach(), grad))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("kind", KINDS)
def test_half_types_accumulate_in_float32(kind, reduction, dtype, monkeypatch):
    x, y = _data(kind, (3000,), dtype)
    w = torch.rand(3000, device=DEVICE, dtype=dtype)
    ours, reference = _both(monkeypatch, kind, x, y, w, wrt=("input", "target"),
                            reduction=reduction)
    assert ours[0].dtype == dtype and ours[1][0].dtype == dtype
    _assert_close(ours, reference, rtol=1e-2, atol=1e-4)


@pytest.mark.parametrize("n", [1, 2, 255, 2047, 2048, 2049, 4095, 4096, 4097, 10241])
@pytest.mark.parametrize("kind", KINDS)
def test_sizes_at_the_block_edges(kind, n, monkeypatch):
    """One program (up to 4096 elements), several with a finishing kernel, partial blocks."""
    x, y = _data(kind, (n,))
    for reduction in ("mean", "none"):
        ours, reference = _both(monkeypatch, kind, x, y, reduction=reduction)
        _assert_close(ours, reference)


@pytest.mark.parametrize("kind", KINDS)
def test_zero_dim_input(kind, monkeypatch):
    x, y = _data(kind, ())
    ours, reference = _both(monkeypatch, kind, x, y, wrt=("input", "target"))
    _assert_close(ours, reference)


@pytest.mark.parametrize("kind", KINDS)
def test_incoming_gradient_scales_the_fused_gradient(kind, monkeypatch):
    x, y = _data(kind, (5000,))
    for g in (1.0, 3.0, 0.0, -0.5):
        grad_out = torch.tensor(g, device=DEVICE)
        ours, reference = _both(monkeypatch, kind, x, y, grad_out=grad_out)
        _assert_close(ours, reference)


@pytest.mark.parametrize("kind", KINDS)
def test_second_backward_over_a_retained_graph_recomputes(kind):
    x, y = _data(kind, (5000,))
    xr = x.clone().requires_grad_()
    fn = binary_cross_entropy if kind == "probs" else binary_cross_entropy_with_logits
    loss = fn(xr, y)
    loss.backward(torch.tensor(2.0, device=DEVICE), retain_graph=True)
    first = xr.grad.clone()
    loss.backward()  # the fused gradient was handed over: this one is recomputed
    torch.testing.assert_close(xr.grad, first * 1.5, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("kind", KINDS)
def test_double_backward_is_the_reference_graph(kind, monkeypatch):
    """create_graph=True: a gradient penalty differentiates the gradient."""
    x, y = _data(kind, (50,))
    w = torch.rand(50, device=DEVICE)
    fn = binary_cross_entropy if kind == "probs" else binary_cross_entropy_with_logits

    def penalty():
        xr = x.clone().requires_grad_()
        loss = fn(xr, y, w)
        (g,) = torch.autograd.grad(loss, xr, create_graph=True)
        return loss.grad_fn.name(), torch.autograd.grad((g ** 2).sum(), xr)[0]

    name, ours = penalty()
    monkeypatch.setattr(route, "ENABLED", False)
    _, reference = penalty()
    assert on_kernels(name)
    torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-7)


def test_results_are_the_same_every_run():
    """Partial sums are added in a fixed order: no atomics."""
    x, y = _data("logits", (20000,))
    runs = [_run("logits", x, y) for _ in range(2)]
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1][0], runs[1][1][0])


# ----------------------------------------------------------------------------- range checks


def _flag(kind, x, y, check_input, check_target):
    """The kernel's device flag: 1 when every checked value is in [0, 1], else 0."""
    _, _, ok = torch.ops.logreg_torch.bce_forward(
        x, y, None, None, kind == "logits", "mean", 0.0, check_input, check_target, False,
        [0, 1, 1], [0, 1, 1])
    return int(ok)


@pytest.mark.parametrize("n", [7, 9000])
def test_the_kernel_flags_values_outside_the_unit_range(n):
    x, y = _data("probs", (n,))
    assert _flag("probs", x, y, True, True) == 1
    for bad_x, bad_y in [(1.5, None), (None, -0.1), (float("nan"), None), (None, float("nan"))]:
        xb, yb = x.clone(), y.clone()
        if bad_x is not None:
            xb[n - 1] = bad_x
        if bad_y is not None:
            yb[n // 2] = bad_y
        assert _flag("probs", xb, yb, True, True) == 0
        assert _flag("probs", xb, yb, bad_x is not None, bad_y is not None) == 0
        assert _flag("probs", xb, yb, bad_x is None, bad_y is None) == 1


@pytest.mark.skipif(not INTERPRETED, reason="on a GPU the assert is device-side: "
                    "test_cuda_range_error_is_a_device_assert")
@pytest.mark.parametrize("kind", KINDS)
def test_range_errors_name_the_tensors(kind):
    x, y = _data(kind, (5000,))
    fn = binary_cross_entropy if kind == "probs" else binary_cross_entropy_with_logits
    bad = y.clone()
    bad[4321] = 1.5
    with pytest.raises(RuntimeError, match=r"target must be in \[0, 1\]"):
        fn(x, bad)
    with pytest.raises(RuntimeError, match=r"target must be in \[0, 1\]"):
        fn(x, bad, label_smoothing=0.5)  # the targets given, not the smoothed ones (1.25)
    assert torch.isfinite(fn(x, bad, check_range=False))
    if kind == "probs":
        with pytest.raises(RuntimeError, match=r"input \(probabilities\) and target"):
            fn(x * 2, y)


# ----------------------------------------------------------------------------- which path


def _path(kind, x, y, **kwargs):
    return _run(kind, x, y, **kwargs)[2]


def test_what_the_kernels_do_not_cover_takes_the_path_without_them(monkeypatch):
    x, y = _data("logits", (40,))
    assert on_kernels(_path("logits", x, y))
    assert not on_kernels(_path("logits", x.double(), y.double()))  # float64
    assert _path("logits", x[:0], y[:0]) != ""
    assert not on_kernels(_path("logits", x[:0], y[:0]))  # empty
    assert not on_kernels(_path("logits", x.as_subclass(_Subclass), y))  # tensor subclasses
    for attribute in ("TORCH_HAS_TRITON_OP", "TRITON_INSTALLED", "ENABLED"):
        with monkeypatch.context() as m:  # torch < 2.6, no triton, LOGREG_TORCH_TRITON=0
            m.setattr(route, attribute, False)
            assert not on_kernels(_path("logits", x, y))
    with fwAD.dual_level():  # forward AD: the custom ops have no jvp
        dual = fwAD.make_dual(x, torch.ones_like(x))
        tangent = fwAD.unpack_dual(binary_cross_entropy_with_logits(dual, y)).tangent
    torch.testing.assert_close(tangent, (torch.sigmoid(x) - y).mean(), rtol=1e-5, atol=1e-7)
    # torch.func: no vmap rule either; grad and vmap give the reference path's results
    grad = torch.func.grad(binary_cross_entropy_with_logits)(x, y)
    torch.testing.assert_close(grad, (torch.sigmoid(x) - y) / 40, rtol=1e-5, atol=1e-7)
    per_row = torch.func.vmap(binary_cross_entropy_with_logits)(x.view(4, 10), y.view(4, 10))
    torch.testing.assert_close(per_row, F.binary_cross_entropy_with_logits(
        x.view(4, 10), y.view(4, 10), reduction="none").mean(1), rtol=1e-5, atol=1e-7)


class _Subclass(torch.Tensor):
    pass


def test_autocast_computes_in_float32():
    x, y = _data("logits", (64,))
    with torch.autocast(DEVICE, dtype=torch.bfloat16):
        loss = binary_cross_entropy_with_logits(x.bfloat16().requires_grad_(), y)
    assert loss.dtype == torch.float32 and on_kernels(loss.grad_fn.name())


def test_broadcast_plan_reads_in_place_where_it_can():
    shape = torch.Size((6, 5, 7))
    plans = {name: triton_ops.broadcast_plan(torch.ones(s), shape)
             for name, s in SHAPES.items()}
    assert plans["scalar"][1] == [int(triton_ops.SCALAR), 1, 1]
    assert plans["each"][1] == [int(triton_ops.EACH), 1, 1]
    assert plans["last"][1] == [int(triton_ops.BLOCKED), 1, 7]
    assert plans["rows"][1] == [int(triton_ops.BLOCKED), 35, 6]
    assert plans["middle"][1] == [int(triton_ops.BLOCKED), 7, 5]
    assert plans["gapped"][1] == [int(triton_ops.EACH), 1, 1]  # a copy, expanded
    assert plans["gapped"][0].shape == shape
    assert triton_ops.broadcast_plan(None, shape) == (None, [int(triton_ops.ABSENT), 1, 1])


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kind", KINDS)
def test_compile_fullgraph_keeps_the_op_and_matches(kind, reduction, monkeypatch):
    """torch.compile traces the host code around the kernels (every operand mode of weight and
    pos_weight, smoothing, the range assert) without a graph break, keeps the custom op in the
    graph, and gives the eager values and gradients. (With torch 2.11 this failed on every
    compiled call: the host code called int() on Triton constexprs, which dynamo cannot trace.)
    Under the interpreter: dynamo's graph run as it is (backend "eager": AOTAutograd would
    inline the op's body, whose interpreted launches a trace cannot see); on a GPU: inductor."""
    import torch._dynamo

    x, y = _data(kind, (6, 5, 7))
    gen = torch.Generator().manual_seed(2)
    w = (torch.rand(6, 1, 1, generator=gen) + 0.5).to(DEVICE)
    pw = (torch.rand(7, generator=gen) * 3).to(DEVICE)
    extra = {"pos_weight": pw} if kind == "logits" else {}
    fn = binary_cross_entropy if kind == "probs" else binary_cross_entropy_with_logits

    def loss(a, b):
        return fn(a, b, w, reduction=reduction, label_smoothing=0.1, **extra)

    assert any("logreg_torch.bce_forward" in op for op in _graph_ops(loss, x, y))

    def run(compiled):
        torch._dynamo.reset()
        xr = x.clone().requires_grad_()
        backend = "eager" if INTERPRETED else "inductor"
        out = (torch.compile(loss, fullgraph=True, backend=backend) if compiled else loss)(xr, y)
        return out.detach(), torch.autograd.grad(out.sum(), xr)

    _assert_close(run(True), run(False), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- GPU only


@pytest.mark.cuda
@compiled_only
@pytest.mark.parametrize("kind", KINDS)
def test_cuda_training_step_has_no_host_sync(kind):
    x, y = _data(kind, (100_000,))
    fn = binary_cross_entropy if kind == "probs" else binary_cross_entropy_with_logits
    xr = x.clone().requires_grad_()
    fn(xr, y).backward()  # warm-up: compiles the kernels
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        loss = fn(xr, y, torch.rand_like(y))
        loss.backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert on_kernels(loss.grad_fn.name())


def _graph_ops(fn, *args):
    """The call_function targets of the graph torch.compile(fullgraph=True) traces for fn."""
    import torch._dynamo

    seen = []

    def backend(gm, example_inputs):
        seen.extend(str(node.target) for node in gm.graph.nodes if node.op == "call_function")
        return gm

    torch._dynamo.reset()
    torch.compile(fn, fullgraph=True, backend=backend)(*args)
    return seen


@pytest.mark.cuda
@compiled_only
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("kind", KINDS)
def test_cuda_compile_keeps_the_kernels(kind, reduction, monkeypatch):
    import torch._dynamo

    x, y = _data(kind, (10_000,))
    w = torch.rand(10_000, device=DEVICE)
    fn = binary_cross_entropy if kind == "probs" else binary_cross_entropy_with_logits
    assert any("logreg_torch.bce_forward" in op for op in _graph_ops(
        lambda a, b: fn(a, b, w, reduction=reduction), x, y))

    def run():
        torch._dynamo.reset()
        xr = x.clone().requires_grad_()
        loss = torch.compile(lambda a, b: fn(a, b, w, reduction=reduction), fullgraph=True)(
            xr, y)
        return loss.detach(), torch.autograd.grad(loss.sum(), xr)

    ours = run()
    monkeypatch.setattr(route, "ENABLED", False)
    _assert_close(ours, run(), rtol=1e-5, atol=1e-6)


@compiled_only
@pytest.mark.parametrize("kind", KINDS)
def test_cuda_launcher_gives_what_tritons_own_launch_gives(kind, monkeypatch):
    """triton_launch hands repeat launches to the compiled kernel: bitwise the same results as
    Triton's own launch, for the lean and the full forward kernel, the finishing kernel and
    the backward ones, aligned and unaligned (a view one element in) inputs."""
    from logreg_torch.loss import triton_launch

    x, y = _data(kind, (20001,))
    w = torch.rand(20001, device=DEVICE)

    def results():
        out = []
        for a, b in ((x, y), (x[1:], y[1:])):
            for kwargs in ({}, {"weight": w[:len(a)], "label_smoothing": 0.1}):
                for _ in range(2):  # the second call takes the cached kernel
                    out.append(_run(kind, a, b, wrt=("input", "target"), **kwargs)[:2])
        return out

    monkeypatch.setattr(triton_launch, "ENABLED", True)  # off by default until measured
    fast = results()
    monkeypatch.setattr(triton_launch, "ENABLED", False)
    for a, b in zip(fast, results(), strict=True):
        assert torch.equal(a[0], b[0])
        assert all(torch.equal(u, v) for u, v in zip(a[1], b[1], strict=True))


@pytest.mark.cuda
@compiled_only
def test_cuda_export_keeps_the_op_and_runs_with_and_without_grad():
    from logreg_torch.loss import BCEWithLogitsLoss

    x, y = _data("logits", (1000,))
    net = torch.nn.Linear(1000, 1000).to(DEVICE)

    class WithLoss(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net, self.loss = net, BCEWithLogitsLoss()

        def forward(self, a, b):
            return self.loss(self.net(a), b)

    program = torch.export.export(WithLoss(), (x, y))
    assert "logreg_torch.bce_forward" in str(program.graph)
    module = program.module()
    with torch.no_grad():
        value = module(x, y)
    loss = module(x, y)
    grads = torch.autograd.grad(loss, list(module.parameters()))
    expected = F.binary_cross_entropy_with_logits(net(x), y)
    torch.testing.assert_close(value, expected.detach(), rtol=1e-5, atol=1e-6)
    theirs = torch.autograd.grad(expected, list(net.parameters()))
    for a, b in zip(grads, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.cuda
@compiled_only
def test_cuda_range_error_is_a_device_assert(tmp_path):
    """A device-side assert ends the CUDA context, so it runs in its own process."""
    code = ("import torch\nfrom logreg_torch import binary_cross_entropy_with_logits as f\n"
            "y = torch.rand(5000, device='cuda'); y[17] = 2\n"
            "f(torch.randn(5000, device='cuda'), y)\ntorch.cuda.synchronize()\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert out.returncode != 0 and "assert" in out.stderr.lower(), out.stderr[-2000:]
