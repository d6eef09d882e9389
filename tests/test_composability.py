"""Our losses where torch's BCE works: every PyTorch subsystem, run with torch's loss and with
ours in the same code; both must succeed and agree (values, gradients, per-sample gradients,
Hessians)."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch.func import functional_call, grad, hessian, jacrev, jvp, vmap

from logreg_torch import losses_fast
from logreg_torch.losses import (
    BCELoss,
    BCEWithLogitsLoss,
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
)

KINDS = ["probs", "logits"]
IMPLS = {
    ("probs", "torch"): F.binary_cross_entropy,
    ("probs", "ours"): binary_cross_entropy,
    ("logits", "torch"): F.binary_cross_entropy_with_logits,
    ("logits", "ours"): binary_cross_entropy_with_logits,
}
TOL = dict(rtol=1e-8, atol=1e-10)  # float64; second derivatives round differently
# On a GPU the tests below that take ``device`` run in float32 (the loss's Triton kernels'
# dtypes, so that they are the path under test where they apply), to float32 tolerances.
CUDA_TOL = dict(rtol=1e-4, atol=1e-6)


def pytest_generate_tests(metafunc):
    if "device" in metafunc.fixturenames:
        metafunc.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])


def _dtype(device):
    return torch.float64 if device == "cpu" else torch.float32


def _tol(device):
    return TOL if device == "cpu" else CUDA_TOL


def _data(kind, shape=(6, 3), dtype=torch.float64, seed=0, device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    if kind == "probs":
        x = torch.rand(shape, generator=gen, dtype=dtype) * 0.9 + 0.05
    else:
        x = torch.randn(shape, generator=gen, dtype=dtype) * 3
    y = torch.rand(shape, generator=gen, dtype=dtype)
    return x.to(device), y.to(device)


def _both(kind, run):
    """``run(loss_fn)`` with torch's loss and with ours: (torch's result, ours)."""
    return run(IMPLS[kind, "torch"]), run(IMPLS[kind, "ours"])


def _assert_close(a, b, **tol):
    if isinstance(a, tuple | list):
        assert len(a) == len(b)
        for u, v in zip(a, b, strict=True):
            _assert_close(u, v, **tol)
        return
    torch.testing.assert_close(b, a, **(tol or TOL))


class _Net(torch.nn.Module):
    """A two-layer net that ends in probabilities or logits."""

    def __init__(self, kind):
        super().__init__()
        torch.manual_seed(0)
        self.kind = kind
        self.body = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(),
                                        torch.nn.Linear(5, 1))

    def forward(self, x):
        z = self.body(x).squeeze(-1)
        return torch.sigmoid(z) if self.kind == "probs" else z


def _batch(n=8, dtype=torch.float64, device="cpu"):
    gen = torch.Generator().manual_seed(1)
    return (torch.randn(n, 4, generator=gen, dtype=dtype).to(device),
            torch.randint(0, 2, (n,), generator=gen).to(device, dtype))


# ----------------------------------------------------------------------------- autograd


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_double_backward_gradient_penalty(kind, reduction, device):
    """d/dtheta of |dL/dtheta|^2: needs the backward to be differentiable."""
    net = _Net(kind).to(device, _dtype(device))
    x, y = _batch(dtype=_dtype(device), device=device)

    def run(loss_fn):
        loss = loss_fn(net(x), y, reduction=reduction).sum()
        grads = torch.autograd.grad(loss, list(net.parameters()), create_graph=True)
        penalty = sum(g.pow(2).sum() for g in grads)
        return (loss, *torch.autograd.grad(penalty, list(net.parameters())))

    _assert_close(*_both(kind, run), **_tol(device))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_forward_ad_dual_tensors(kind, reduction, device):
    x, y = _data(kind, dtype=_dtype(device), device=device)
    tangent = torch.randn_like(x)

    def run(loss_fn):
        with fwAD.dual_level():
            out = loss_fn(fwAD.make_dual(x, tangent), y, reduction=reduction)
            primal, tan = fwAD.unpack_dual(out)
        return primal, tan

    _assert_close(*_both(kind, run), **_tol(device))


@pytest.mark.parametrize("kind", KINDS)
def test_activation_checkpointing(kind, device):
    from torch.utils.checkpoint import checkpoint

    net = _Net(kind).to(device, _dtype(device))
    x, y = _batch(dtype=_dtype(device), device=device)

    def run(loss_fn):
        loss = checkpoint(lambda inp: loss_fn(net(inp), y), x, use_reentrant=False)
        return (loss, *torch.autograd.grad(loss, list(net.parameters())))

    _assert_close(*_both(kind, run), **_tol(device))


# ----------------------------------------------------------------------------- torch.func


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_func_grad_jacrev_hessian_jvp(kind, reduction, device):
    x, y = _data(kind, shape=(5,), dtype=_dtype(device), device=device)
    direction = torch.randn_like(x)

    def run(loss_fn):
        def f(inp):
            return loss_fn(inp, y, reduction=reduction)

        return (grad(f)(x), jacrev(f)(x), hessian(f)(x), jvp(f, (x,), (direction,))[1],
                jacrev(lambda t: loss_fn(x, t, reduction=reduction))(y))

    _assert_close(*_both(kind, run), **_tol(device))


@pytest.mark.parametrize("kind", KINDS)
def test_vmap_over_a_batch_of_losses(kind, device):
    x, y = _data(kind, shape=(4, 6), dtype=_dtype(device), device=device)
    w = torch.rand(6, dtype=_dtype(device), device=device)

    def run(loss_fn):
        per_row = vmap(lambda a, b: loss_fn(a, b, w))(x, y)
        elementwise = vmap(lambda a, b: loss_fn(a, b, reduction="none"), in_dims=(0, None))(x, y[0])
        return per_row, elementwise

    _assert_close(*_both(kind, run), **_tol(device))


@pytest.mark.parametrize("kind", KINDS)
def test_per_sample_gradients_vmap_grad_functional_call(kind, device):
    """The torch.func recipe for per-sample gradients (Opacus-style DP-SGD)."""
    net = _Net(kind).to(device, _dtype(device))
    params = {k: v.detach() for k, v in net.named_parameters()}
    x, y = _batch(dtype=_dtype(device), device=device)

    def run(loss_fn):
        def sample_loss(p, xi, yi):
            out = functional_call(net, p, (xi.unsqueeze(0),))
            return loss_fn(out, yi.unsqueeze(0))

        return vmap(grad(sample_loss), in_dims=(None, 0, 0))(params, x, y)

    theirs, ours = _both(kind, run)
    for name in params:
        _assert_close(theirs[name], ours[name], **_tol(device))
    # and the mean of the per-sample gradients is the batch gradient
    batch = torch.autograd.grad(IMPLS[kind, "ours"](net(x), y), list(net.parameters()))
    for (name, _), g in zip(net.named_parameters(), batch, strict=True):
        _assert_close(ours[name].mean(0), g, **_tol(device))


@pytest.mark.parametrize("kind", KINDS)
def test_hessian_of_the_parameters(kind, device):
    net = _Net(kind).to(device, _dtype(device))
    params = {k: v.detach() for k, v in net.named_parameters()}
    x, y = _batch(dtype=_dtype(device), device=device)

    def run(loss_fn):
        h = hessian(lambda p: loss_fn(functional_call(net, p, (x,)), y))(params)
        return [h[a][b] for a in params for b in params]

    _assert_close(*_both(kind, run), **_tol(device))


# ----------------------------------------------------------------------------- compile, export


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_compile_fullgraph_no_graph_break(kind, reduction, device):
    import torch._dynamo

    net = _Net(kind).to(device)
    x, y = _batch(dtype=torch.float32, device=device)

    def run(loss_fn):
        def step(inp, target):
            return loss_fn(net(inp), target, reduction=reduction)

        torch._dynamo.reset()
        explained = torch._dynamo.explain(step)(x, y)
        assert explained.graph_break_count == 0 and explained.graph_count == 1
        loss = torch.compile(step, fullgraph=True, backend="aot_eager")(x, y)
        return (loss, *torch.autograd.grad(loss, list(net.parameters())))

    _assert_close(*_both(kind, run), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_compile_inductor_matches_eager(kind, device):
    net = _Net(kind).to(device)
    x, y = _batch(n=64, dtype=torch.float32, device=device)

    def run(loss_fn):
        torch._dynamo.reset()
        loss = torch.compile(lambda a, b: loss_fn(net(a), b), fullgraph=True)(x, y)
        return (loss, *torch.autograd.grad(loss, list(net.parameters())))

    theirs, ours = _both(kind, run)
    _assert_close(theirs, ours, rtol=1e-5, atol=1e-6)
    eager = IMPLS[kind, "ours"](net(x), y)
    _assert_close(eager, ours[0], rtol=1e-6, atol=1e-6)


class _WithLoss(torch.nn.Module):
    def __init__(self, kind, criterion):
        super().__init__()
        self.net, self.criterion = _Net(kind), criterion

    def forward(self, x, y):
        return self.criterion(self.net(x), y)


@pytest.mark.parametrize("kind", KINDS)
def test_export_runs_with_and_without_grad(kind, device):
    x, y = _batch(dtype=torch.float32, device=device)
    modules = {"probs": (torch.nn.BCELoss, BCELoss),
               "logits": (torch.nn.BCEWithLogitsLoss, BCEWithLogitsLoss)}[kind]

    def run(criterion):
        model = _WithLoss(kind, criterion()).to(device)
        program = torch.export.export(model, (x, y))
        module = program.module()
        with torch.no_grad():
            value = module(x, y)
        loss = module(x, y)  # its parameters require grad
        grads = torch.autograd.grad(loss, list(module.parameters()))
        _assert_close(model(x, y), value, rtol=1e-6, atol=1e-7)
        return (value, loss, *grads)

    _assert_close(run(modules[0]), run(modules[1]), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- meta, fake, autocast


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_meta_tensors(kind, reduction):
    x = torch.empty(5, 3, device="meta", requires_grad=True)
    y = torch.empty(5, 3, device="meta")

    def run(loss_fn):
        out = loss_fn(x, y, reduction=reduction)
        (g,) = torch.autograd.grad(out.sum(), x)
        return out.shape, out.dtype, out.device, g.shape

    theirs, ours = _both(kind, run)
    assert theirs == ours


@pytest.mark.parametrize("kind", KINDS)
def test_meta_tensors_under_vmap_and_per_sample_grad(kind):
    """Off the CPU (meta here, CUDA on a GPU) the range check is one torch._assert_async, which
    has no batching rule: under torch.func it runs on the real tensor outside the transforms
    (before, vmap raised 'Batching rule not implemented for aten::_assert_async.msg')."""
    x = torch.empty(4, 6, device="meta")
    y = torch.empty(4, 6, device="meta")

    def run(loss_fn):
        per_row = vmap(loss_fn)(x, y)
        per_sample = vmap(grad(loss_fn))(x, y)
        return per_row.shape, per_row.device, per_sample.shape, per_sample.device

    theirs, ours = _both(kind, run)
    assert theirs == ours


@pytest.mark.parametrize("kind", KINDS)
def test_fake_tensors_then_eager_is_real_and_correct(kind):
    """A call under FakeTensorMode (and export, compile) must leave nothing behind: the next
    eager call on this thread gives a real tensor with the right value."""
    from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode

    x, y = _data(kind, shape=(300,), dtype=torch.float32)
    y = y.round()  # hard labels: the logits kernel with every scratch tensor

    def run(loss_fn):
        with FakeTensorMode() as mode:
            fx, fy = mode.from_tensor(x).requires_grad_(), mode.from_tensor(y)
            out = loss_fn(fx, fy)
            (g,) = torch.autograd.grad(out, fx)
            assert isinstance(out, FakeTensor) and isinstance(g, FakeTensor)
        torch.export.export(_WithLoss(kind, lambda a, b: loss_fn(a, b)), _batch(n=300,
                            dtype=torch.float32))
        torch.compile(loss_fn, backend="aot_eager", fullgraph=True)(x, y)
        xr = x.clone().requires_grad_()
        loss = loss_fn(xr, y)
        assert type(loss) is torch.Tensor
        return (loss, *torch.autograd.grad(loss, xr))

    _assert_close(*_both(kind, run), rtol=1e-6, atol=1e-7)


def test_scratch_cache_only_holds_real_cpu_tensors():
    from torch._subclasses.fake_tensor import FakeTensorMode

    losses_fast._SCRATCH.__dict__.clear()
    with FakeTensorMode():
        losses_fast.scratch_tensors(64, torch.float32)
    with torch.device("meta"):
        losses_fast.scratch_tensors(64, torch.float32)
    assert losses_fast._SCRATCH.__dict__.get("by_dtype", {}) == {}
    bufs = losses_fast.scratch_tensors(64, torch.float32)
    assert all(type(b) is torch.Tensor and b.device.type == "cpu" for b in bufs)


@pytest.mark.parametrize("kind", KINDS)
def test_cpu_autocast(kind):
    net = _Net(kind)
    x, y = _batch(n=16, dtype=torch.float32)

    def run(loss_fn):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = net(x)
            assert out.dtype == torch.bfloat16
            loss = loss_fn(out.float() if loss_fn is F.binary_cross_entropy else out, y)
        return (loss, *torch.autograd.grad(loss, list(net.parameters())))

    theirs, ours = _both(kind, run)
    assert ours[0].dtype == theirs[0].dtype == torch.float32
    _assert_close(theirs, ours, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- DDP


@pytest.mark.parametrize("kind", KINDS)
def test_ddp_single_process(kind, tmp_path):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    x, y = _batch()
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)
    try:
        def run(loss_fn):
            model = DDP(_Net(kind).double())
            loss = loss_fn(model(x), y)
            loss.backward()
            return (loss, *(p.grad for p in model.parameters()))

        _assert_close(*_both(kind, run))
    finally:
        dist.destroy_process_group()


# ----------------------------------------------------------------------------- range checks


def _bad_targets():
    x, y = _data("logits", shape=(6,), dtype=torch.float32)
    y[2] = 1.5
    return x, y


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_range_check_in_a_compiled_graph(reduction):
    fn = torch.compile(binary_cross_entropy_with_logits, fullgraph=True, backend="aot_eager")
    x, y = _bad_targets()
    with pytest.raises(RuntimeError, match=r"target must be in \[0, 1\]"):
        fn(x, y, reduction=reduction)
    assert torch.isfinite(fn(x, y.clamp(0, 1), reduction=reduction)).all()


def test_range_check_in_an_exported_program():
    x, y = _bad_targets()
    program = torch.export.export(BCEWithLogitsLoss(), (x, y.clamp(0, 1)))
    with pytest.raises(RuntimeError, match=r"target must be in \[0, 1\]"):
        program.module()(x, y)


def test_range_check_under_vmap_and_grad_names_the_range():
    x, y = _bad_targets()
    with pytest.raises(RuntimeError, match=r"found values in \[.*, 1.5\]"):
        vmap(binary_cross_entropy_with_logits)(x.view(2, 3), y.view(2, 3))
    with pytest.raises(RuntimeError, match=r"input \(probabilities\).*found values"):
        grad(binary_cross_entropy)(x, y.clamp(0, 1))  # logits are not probabilities


# ----------------------------------------------------------------------------- the modules


def test_modules_are_torch_modules_with_torch_constructors():
    w, pw = torch.rand(3), torch.rand(3)
    for ours, theirs in [(BCELoss(w, None, None, "sum"), torch.nn.BCELoss(w, None, None, "sum")),
                         (BCEWithLogitsLoss(w, None, None, "sum", pw),
                          torch.nn.BCEWithLogitsLoss(w, None, None, "sum", pw))]:
        assert isinstance(ours, type(theirs))
        assert ours.reduction == theirs.reduction == "sum"
        assert list(ours.state_dict()) == list(theirs.state_dict())
        ours.load_state_dict(theirs.state_dict())
    keyword = BCEWithLogitsLoss(weight=w, pos_weight=pw, reduction="none", label_smoothing=0.1,
                                check_range=False)
    assert keyword.check_range is False and keyword.label_smoothing == 0.1
    with pytest.raises(TypeError):
        BCELoss(w, None, None, "mean", 0.1)  # label_smoothing is keyword-only


@pytest.mark.parametrize("size_average,reduce", [(False, None), (None, False), (True, True),
                                                 (False, True)])
def test_deprecated_size_average_and_reduce_behave_as_torch(size_average, reduce):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        theirs = torch.nn.BCEWithLogitsLoss(size_average=size_average, reduce=reduce)
        ours = BCEWithLogitsLoss(size_average=size_average, reduce=reduce)
        theirs_p = torch.nn.BCELoss(None, size_average, reduce)
        ours_p = BCELoss(None, size_average, reduce)
    assert len(caught) == 4 and all(issubclass(w.category, UserWarning) for w in caught)
    assert ours.reduction == theirs.reduction == ours_p.reduction == theirs_p.reduction
    x, y = _data("probs")
    torch.testing.assert_close(ours(x, y), theirs(x, y))
    torch.testing.assert_close(ours_p(x, y), theirs_p(x, y))


def test_import_does_not_load_dynamo():
    code = "import sys, logreg_torch, logreg_torch.fast; print('torch._dynamo' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


# ----------------------------------------------------------------------------- fast path


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_fast_path_equals_reference_path(kind, reduction, monkeypatch):
    """The eager CPU fast path and the reference Functions give the same values and
    gradients (the reference is forced by pretending a trace is active)."""
    x, y = _data(kind, shape=(300, 7), dtype=torch.float32)
    w = torch.rand(7)
    fn = IMPLS[kind, "ours"]

    def run():
        xr = x.clone().requires_grad_()
        loss = fn(xr, y, w, reduction=reduction)
        return loss, torch.autograd.grad(loss, xr)[0], loss.grad_fn.name()

    fast = run()
    monkeypatch.setattr(losses_fast, "tracing_or_transformed", lambda: True)
    reference = run()
    assert "FusedLoss" in fast[2] and "FusedLoss" not in reference[2]
    _assert_close(fast[:2], reference[:2], rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------------------------- CUDA


@pytest.mark.cuda
@pytest.mark.parametrize("kind", KINDS)
def test_cuda_training_step_has_no_host_sync(kind):
    net = _Net(kind).cuda()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    x, y = (t.float().cuda() for t in _batch(n=64))
    criterion = BCELoss() if kind == "probs" else BCEWithLogitsLoss()
    criterion(net(x), y).backward()  # warm-up: lazy CUDA initialisation may sync
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        optimizer.zero_grad()
        loss = criterion(net(x), y)
        loss.backward()
        optimizer.step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(loss).item()


@pytest.mark.cuda
@pytest.mark.parametrize("kind", KINDS)
def test_cuda_compile_and_autocast_match_torch(kind):
    net = _Net(kind).cuda()
    x, y = (t.float().cuda() for t in _batch(n=64))

    def run(loss_fn):
        torch._dynamo.reset()
        loss = torch.compile(lambda a, b: loss_fn(net(a), b), fullgraph=True)(x, y)
        with torch.autocast("cuda", dtype=torch.float16):
            out = net(x)
            if loss_fn is not F.binary_cross_entropy:
                amp = loss_fn(out, y)
        if loss_fn is F.binary_cross_entropy:
            # torch refuses its BCE on probabilities under CUDA autocast, whatever the input's
            # dtype ("unsafe to autocast"); it is compared where it works: outside autocast,
            # on the same half-precision output made float32.
            amp = loss_fn(out.float(), y)
        return (loss, amp, *torch.autograd.grad(loss + amp, list(net.parameters())))

    _assert_close(*_both(kind, run), rtol=1e-4, atol=1e-5)



@pytest.mark.parametrize("kind", KINDS)
def test_vmap_inside_compile(kind):
    x, y = _data(kind, shape=(3, 5), dtype=torch.float32)

    def run(loss_fn):
        torch._dynamo.reset()
        return torch.compile(vmap(loss_fn), fullgraph=True, backend="aot_eager")(x, y)

    _assert_close(*_both(kind, run), rtol=1e-6, atol=1e-7)
