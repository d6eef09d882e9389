"""Our losses where torch's BCE works, run with torch's loss and with ours in the same code:
torch.compile (no graph break, inductor), torch.export (with and without grad), and the
losses' range checks inside a compiled graph, an exported program and torch.func."""

from __future__ import annotations

import pytest
import torch
from composability_helpers import IMPLS, KINDS, _assert_close, _batch, _both, _data, _Net, _WithLoss

# pytest's hook for the tests taking ``device`` (cpu, and cuda on a GPU), under its own name:
from composability_helpers import pytest_generate_tests as pytest_generate_tests
from torch.func import grad, vmap

from logreg_torch.losses import (
    BCELoss,
    BCEWithLogitsLoss,
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
)

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


@pytest.mark.parametrize("kind", KINDS)
def test_vmap_inside_compile(kind):
    x, y = _data(kind, shape=(3, 5), dtype=torch.float32)

    def run(loss_fn):
        torch._dynamo.reset()
        return torch.compile(vmap(loss_fn), fullgraph=True, backend="aot_eager")(x, y)

    _assert_close(*_both(kind, run), rtol=1e-6, atol=1e-7)


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
