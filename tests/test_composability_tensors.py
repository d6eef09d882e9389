"""Our losses where torch's BCE works, run with torch's loss and with ours in the same code:
meta tensors (also under vmap and per-sample grad), FakeTensorMode (leaving nothing behind for
the next eager call), CPU autocast, and on a GPU a training step without host sync and
compile / autocast on CUDA."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from composability_helpers import KINDS, _assert_close, _batch, _both, _data, _Net, _WithLoss
from torch.func import grad, vmap

from logreg_torch import losses_fast
from logreg_torch.losses import BCELoss, BCEWithLogitsLoss

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
