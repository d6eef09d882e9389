"""The Triton loss (logreg_torch/loss/triton_ops.py, triton_kernels.py): which calls take the
kernels and which the path without them, autocast, compile(fullgraph) of the host code, and on
a GPU no host sync, compile, the eager launcher and export. Values and gradients against the
path without kernels are in test_loss_triton_parity.py.

Like test_loss_triton_parity.py, on a GPU or under Triton's interpreter (in the fresh process
that ``tests/test_triton_kernels.py`` starts); elsewhere the whole module is skipped.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from loss_triton_helpers import (  # skips this module where the kernels cannot run
    DEVICE,
    INTERPRETED,
    KINDS,
    REDUCTIONS,
    _assert_close,
    _data,
    _run,
    on_kernels,
)
from loss_triton_helpers import _kernels_here as _kernels_here  # the autouse fixture

from logreg_torch import binary_cross_entropy, binary_cross_entropy_with_logits
from logreg_torch.loss import route

# On a GPU every test here is a GPU test: `pytest -m cuda` selects them with the others.
pytestmark = [] if INTERPRETED else [pytest.mark.cuda]
compiled_only = pytest.mark.skipif(INTERPRETED, reason="compiled kernels only: this process "
                                   "runs Triton's interpreter")


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
