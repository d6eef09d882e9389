"""Our losses where torch's BCE works: every PyTorch subsystem, run with torch's loss and with
ours in the same code; both must succeed and agree (values, gradients, per-sample gradients,
Hessians). This file: autograd (double backward, forward AD, activation checkpointing),
torch.func (grad, jacrev, hessian, jvp, vmap, per-sample gradients) and DDP.

The other subsystems: test_composability_compile.py (compile, export, the range checks in
them), test_composability_tensors.py (meta and fake tensors, autocast, CUDA),
test_composability_modules.py (the loss modules, the eager fast path)."""

from __future__ import annotations

import pytest
import torch
import torch.autograd.forward_ad as fwAD
from composability_helpers import (  # tests/ is on sys.path under pytest
    IMPLS,
    KINDS,
    _assert_close,
    _batch,
    _both,
    _data,
    _dtype,
    _Net,
    _tol,
)

# pytest's hook for the tests taking ``device`` (cpu, and cuda on a GPU), under its own name:
from composability_helpers import pytest_generate_tests as pytest_generate_tests
from torch.func import functional_call, grad, hessian, jacrev, jvp, vmap

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
