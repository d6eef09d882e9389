"""The Triton loss (logreg_torch/loss/triton_ops.py, triton_kernels.py) against the path without
kernels, in the same harness: values and gradients for every option, half types, sizes at the
block edges, incoming gradients, double backward, how each weight shape is read, and the range
checks. Which calls fall back, compile, export and the GPU-only checks are in test_loss_triton.py.

They run on CUDA tensors on a GPU, and on CPU tensors under Triton's interpreter in the fresh
process that ``tests/test_triton_kernels.py`` starts; elsewhere loss_triton_helpers.py skips them.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from loss_triton_helpers import (  # skips this module where the kernels cannot run
    DEVICE,
    INTERPRETED,
    KINDS,
    REDUCTIONS,
    _assert_close,
    _both,
    _data,
    _run,
    on_kernels,
)
from loss_triton_helpers import _kernels_here as _kernels_here  # the autouse fixture

from logreg_torch import binary_cross_entropy, binary_cross_entropy_with_logits
from logreg_torch.loss import route, triton_ops

# On a GPU every test here is a GPU test: `pytest -m cuda` selects them with the others.
pytestmark = [] if INTERPRETED else [pytest.mark.cuda]


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
