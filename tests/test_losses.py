"""Our hand-written BCE against torch's, on values and gradients (micrograd-style parity):
every dtype, shape and reduction, every weight shape, label smoothing, the modules, autocast and
compile, random cases with hypothesis, CUDA and the README example. Autograd and the CPU
kernels' routes are in test_loss_autograd.py, bad input in test_loss_bad_input.py."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from losses_helpers import REDUCTIONS, TOL, _compare, _probs

import logreg_torch
from logreg_torch.losses import (
    BCELoss,
    BCEWithLogitsLoss,
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
)

SHAPES = [(), (0,), (7,), (0, 3), (4, 5), (2, 3, 4), (2, 1, 3, 5)]


def _grads(loss, inputs, reduction):
    out = loss if reduction != "none" else loss.sum()
    if loss.numel() == 0 or not out.requires_grad:
        return [torch.zeros_like(t) for t in inputs]
    return torch.autograd.grad(out, inputs, allow_unused=True)


# ----------------------------------------------------------------------------- parity: values


@pytest.mark.parametrize("dtype", list(TOL))
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_probs_parity_values_and_input_grad(dtype, shape, reduction):
    gen = torch.Generator().manual_seed(0)
    p = _probs(shape, dtype, gen).requires_grad_()
    y = _probs(shape, dtype, gen, edges=False)
    ours = binary_cross_entropy(p, y, reduction=reduction)
    theirs = F.binary_cross_entropy(p, y, reduction=reduction)
    _compare(ours, theirs, dtype)
    (ga,) = _grads(ours, [p], reduction)
    (gb,) = _grads(theirs, [p], reduction)
    if dtype != torch.float16:  # +-1e12 at p = 0 or 1 overflows float16, in torch too
        assert torch.isfinite(ga).all()
    _compare(ga, gb, dtype)


@pytest.mark.parametrize("dtype", list(TOL))
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_logits_parity_values_and_grads(dtype, shape, reduction):
    gen = torch.Generator().manual_seed(1)
    x = (torch.randn(shape, generator=gen, dtype=torch.float64) * 4).to(dtype).requires_grad_()
    y = _probs(shape, dtype, gen).requires_grad_()
    ours = binary_cross_entropy_with_logits(x, y, reduction=reduction)
    theirs = F.binary_cross_entropy_with_logits(x, y, reduction=reduction)
    _compare(ours, theirs, dtype)
    for a, b in zip(_grads(ours, [x, y], reduction), _grads(theirs, [x, y], reduction),
                    strict=True):
        _compare(a, b, dtype)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_probs_target_grad_matches_torch_inside_0_1(reduction):
    gen = torch.Generator().manual_seed(2)
    p = _probs((5, 6), gen=gen, edges=False).clamp(1e-6, 1 - 1e-6).requires_grad_()
    y = _probs((5, 6), gen=gen).requires_grad_()
    w = torch.rand(6, generator=gen, dtype=torch.float64)
    ours = _grads(binary_cross_entropy(p, y, w, reduction=reduction), [p, y], reduction)
    theirs = _grads(F.binary_cross_entropy(p, y, w, reduction=reduction), [p, y], reduction)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_probs_edges_are_finite_like_torch():
    p = torch.tensor([0.0, 1.0, 0.0, 1.0], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0.0, 1.0, 1.0, 0.0], dtype=torch.float64, requires_grad=True)
    ours = binary_cross_entropy(p, y, reduction="none")
    theirs = F.binary_cross_entropy(p, y, reduction="none")
    torch.testing.assert_close(ours, theirs)
    assert ours.tolist() == [0.0, 0.0, 100.0, 100.0]
    gp, gy = torch.autograd.grad(ours.sum(), [p, y])
    tp, _ = torch.autograd.grad(theirs.sum(), [p, y])
    torch.testing.assert_close(gp, tp)  # torch divides by max(p(1-p), 1e-12): +-1e12, finite
    assert gp[:2].tolist() == [0.0, 0.0] and gp[2:].abs().min() > 9.99e11
    # Deliberate difference: torch's target gradient there is +-inf; ours is the derivative of
    # the clamped loss, finite.
    assert gy.tolist() == [100.0, -100.0, 100.0, -100.0]


def test_probs_naive_formula_would_be_nan_ours_is_not():
    p = torch.tensor([0.0, 1.0], requires_grad=True)
    y = torch.tensor([0.0, 1.0])
    naive = -(y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean()
    (g_naive,) = torch.autograd.grad(naive, p)
    assert torch.isnan(naive) and torch.isnan(g_naive).all()
    ours = binary_cross_entropy(p, y)
    (g,) = torch.autograd.grad(ours, p)
    assert ours.item() == 0.0 and torch.isfinite(g).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_logits_huge_magnitude_finite_and_exact(dtype):
    x = torch.tensor([1e4, -1e4, 1e4, -1e4], dtype=dtype, requires_grad=True)
    y = torch.tensor([0.0, 1.0, 1.0, 0.0], dtype=dtype)
    ours = binary_cross_entropy_with_logits(x, y, reduction="none")
    theirs = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    torch.testing.assert_close(ours, theirs)
    assert ours[:2].tolist() == x[:2].abs().tolist() and ours[2:].tolist() == [0.0, 0.0]
    (g,) = torch.autograd.grad(ours.sum(), x)
    assert g.tolist() == [1.0, -1.0, 0.0, 0.0]


@pytest.mark.parametrize("logit,target", [(-40.0, 0.0), (40.0, 1.0), (-30.0, 0.0), (25.0, 1.0)])
def test_logits_float64_tails_at_least_as_accurate_as_torch(logit, target):
    x = torch.tensor(logit, dtype=torch.float64)
    y = torch.tensor(target, dtype=torch.float64)
    exact = math.log1p(math.exp(-abs(logit)))  # the true loss for a confident correct guess
    ours = binary_cross_entropy_with_logits(x, y).item()
    theirs = F.binary_cross_entropy_with_logits(x, y).item()
    assert abs(ours - exact) <= abs(theirs - exact)
    assert ours == pytest.approx(exact, rel=1e-15)


# ----------------------------------------------------------------------------- weights


def _broadcastable_shapes(shape):
    """Every weight shape torch accepts for this input shape: trailing dims kept or set to 1."""
    out = {()}
    for k in range(1, len(shape) + 1):
        tail = shape[-k:]
        for mask in range(2**k):
            out.add(tuple(1 if mask >> i & 1 else d for i, d in enumerate(tail)))
    return sorted(out)


@pytest.mark.parametrize("wshape", _broadcastable_shapes((3, 4, 5)))
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_every_broadcastable_weight_shape(wshape, reduction):
    gen = torch.Generator().manual_seed(3)
    p = _probs((3, 4, 5), gen=gen).requires_grad_()
    x = torch.randn(3, 4, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    y = _probs((3, 4, 5), gen=gen)
    w = torch.rand(wshape, generator=gen, dtype=torch.float64)
    pw = torch.rand(wshape, generator=gen, dtype=torch.float64) * 3
    cases = [
        (binary_cross_entropy(p, y, w, reduction=reduction),
         F.binary_cross_entropy(p, y, w, reduction=reduction), p),
        (binary_cross_entropy_with_logits(x, y, w, pw, reduction=reduction),
         F.binary_cross_entropy_with_logits(x, y, weight=w, pos_weight=pw, reduction=reduction), x),
        (binary_cross_entropy_with_logits(x, y, pos_weight=pw, reduction=reduction),
         F.binary_cross_entropy_with_logits(x, y, pos_weight=pw, reduction=reduction), x),
    ]
    for ours, theirs, inp in cases:
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(_grads(ours, [inp], reduction)[0],
                                   _grads(theirs, [inp], reduction)[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("wshape", [(2, 3, 4), (5,), (3,), (3, 1, 1, 1)])
def test_non_broadcastable_weight_rejected_like_torch(wshape):
    p, y, x = torch.rand(3, 4), torch.rand(3, 4), torch.randn(3, 4)  # (3,) would need (3, 1)
    w = torch.rand(wshape)
    with pytest.raises(RuntimeError):
        F.binary_cross_entropy(p, y, w)
    with pytest.raises(RuntimeError, match=r"weight of shape .* does not broadcast.*\(3, 4\)"):
        binary_cross_entropy(p, y, w)
    with pytest.raises(RuntimeError, match=r"weight of shape .* does not broadcast"):
        binary_cross_entropy_with_logits(x, y, weight=w)
    with pytest.raises(RuntimeError, match=r"pos_weight of shape .* does not broadcast"):
        binary_cross_entropy_with_logits(x, y, pos_weight=w)


def test_weight_of_other_float_dtype_is_cast_like_torch():
    p, y = torch.rand(4, 3), torch.rand(4, 3)
    w = torch.rand(3, dtype=torch.float64)
    ours, theirs = binary_cross_entropy(p, y, w), F.binary_cross_entropy(p, y, w)
    assert ours.dtype == theirs.dtype == torch.float32
    torch.testing.assert_close(ours, theirs)


# ----------------------------------------------------------------------------- label smoothing


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.5])
def test_label_smoothing_is_keras(eps):
    gen = torch.Generator().manual_seed(8)
    p = torch.rand(10, generator=gen, dtype=torch.float64)
    x = torch.randn(10, generator=gen, dtype=torch.float64)
    y = (torch.rand(10, generator=gen) > 0.5).double().requires_grad_()
    smoothed = y.detach() * (1 - eps) + eps / 2
    torch.testing.assert_close(binary_cross_entropy(p, y, label_smoothing=eps),
                               F.binary_cross_entropy(p, smoothed))
    ours = binary_cross_entropy_with_logits(x, y, label_smoothing=eps)
    torch.testing.assert_close(ours, F.binary_cross_entropy_with_logits(x, smoothed))
    (gy,) = torch.autograd.grad(ours, y)
    torch.testing.assert_close(gy, -x * (1 - eps) / 10)  # chain rule through the smoothing


def test_label_smoothing_checks_the_raw_targets():
    with pytest.raises(RuntimeError, match="target"):
        binary_cross_entropy_with_logits(torch.zeros(3), torch.tensor([0.0, 1.0, -0.01]),
                                         label_smoothing=0.1)


# ----------------------------------------------------------------------------- modules


def test_modules_match_torch_modules_and_hold_buffers():
    w, pw = torch.rand(3), torch.rand(3) + 0.5
    ours = BCEWithLogitsLoss(w, pos_weight=pw)
    theirs = torch.nn.BCEWithLogitsLoss(weight=w, pos_weight=pw)
    assert list(ours.state_dict()) == list(theirs.state_dict()) == ["weight", "pos_weight"]
    x, y = torch.randn(4, 3), torch.rand(4, 3)
    torch.testing.assert_close(ours(x, y), theirs(x, y))
    ours64 = ours.double()  # buffers move with the module, like torch's
    assert ours64.weight.dtype == ours64.pos_weight.dtype == torch.float64
    torch.testing.assert_close(ours64(x.double(), y.double()), theirs.double()(x.double(),
                                                                               y.double()))
    p = torch.rand(4, 3)
    torch.testing.assert_close(BCELoss(w, reduction="sum")(p, y),
                               torch.nn.BCELoss(w, reduction="sum")(p, y))
    assert list(BCELoss().state_dict()) == list(torch.nn.BCELoss().state_dict()) == []
    assert "reduction='mean'" in repr(BCELoss())


def test_reexported_from_package():
    assert logreg_torch.binary_cross_entropy is binary_cross_entropy
    assert logreg_torch.BCEWithLogitsLoss is BCEWithLogitsLoss


def test_drop_in_inside_a_network():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    x, y = torch.randn(32, 6), (torch.rand(32, 1) > 0.5).float()
    ours = BCEWithLogitsLoss(pos_weight=torch.tensor([2.0]))(net(x), y)
    g_ours = torch.autograd.grad(ours, list(net.parameters()))
    theirs = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor([2.0]))(net(x), y)
    g_theirs = torch.autograd.grad(theirs, list(net.parameters()))
    torch.testing.assert_close(ours, theirs)
    for a, b in zip(g_ours, g_theirs, strict=True):
        torch.testing.assert_close(a, b)


# ----------------------------------------------------------------------------- autocast, compile


def test_probs_under_cpu_autocast_returns_float32():
    lin = torch.nn.Linear(4, 1)
    x, y = torch.randn(16, 4), torch.rand(16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        probs = torch.sigmoid(lin(x)).squeeze(-1)
        assert probs.dtype == torch.bfloat16
        ours = binary_cross_entropy(probs, y)
        ours_logits = binary_cross_entropy_with_logits(lin(x).squeeze(-1), y)
    assert ours.dtype == ours_logits.dtype == torch.float32
    torch.testing.assert_close(ours, F.binary_cross_entropy(probs.float(), y))
    ours.backward()
    assert lin.weight.grad is not None and torch.isfinite(lin.weight.grad).all()


def test_torch_compile_gives_the_same_values():
    torch.manual_seed(0)
    model = torch.nn.Linear(5, 1)
    x, y = torch.randn(64, 5), (torch.rand(64) > 0.5).float()

    def step(model, x, y):
        return binary_cross_entropy_with_logits(model(x).squeeze(-1), y)

    compiled = torch.compile(step, backend="aot_eager")
    eager_loss = step(model, x, y)
    eager_grad = torch.autograd.grad(eager_loss, model.weight)[0]
    comp_loss = compiled(model, x, y)
    comp_grad = torch.autograd.grad(comp_loss, model.weight)[0]
    torch.testing.assert_close(comp_loss, eager_loss)
    torch.testing.assert_close(comp_grad, eager_grad)


# ----------------------------------------------------------------------------- properties


@st.composite
def _case(draw):
    ndim = draw(st.integers(0, 4))
    shape = tuple(draw(st.lists(st.integers(0, 4), min_size=ndim, max_size=ndim)))
    wshape = draw(st.sampled_from(_broadcastable_shapes(shape)))
    seed = draw(st.integers(0, 2**31 - 1))
    reduction = draw(st.sampled_from(REDUCTIONS))
    return shape, wshape, seed, reduction


def _with_edges(t, gen):
    # Put exact 0s and 1s at random places: the values torch clamps.
    choice = torch.randint(0, 4, t.shape, generator=gen)
    return torch.where(choice == 0, 0.0, torch.where(choice == 1, 1.0, t))


@settings(max_examples=150, deadline=None)
@given(_case())
def test_property_parity_random_shapes_weights_and_edges(case):
    shape, wshape, seed, reduction = case
    gen = torch.Generator().manual_seed(seed)
    p = _with_edges(torch.rand(shape, generator=gen, dtype=torch.float64), gen).requires_grad_()
    y = _with_edges(torch.rand(shape, generator=gen, dtype=torch.float64), gen)
    x = (torch.randn(shape, generator=gen, dtype=torch.float64) * 10).requires_grad_()
    w = torch.rand(wshape, generator=gen, dtype=torch.float64)
    pw = torch.rand(wshape, generator=gen, dtype=torch.float64) * 4
    pairs = [
        (binary_cross_entropy(p, y, w, reduction=reduction),
         F.binary_cross_entropy(p, y, w, reduction=reduction), p),
        (binary_cross_entropy_with_logits(x, y, w, pw, reduction=reduction),
         F.binary_cross_entropy_with_logits(x, y, weight=w, pos_weight=pw, reduction=reduction), x),
    ]
    for ours, theirs, inp in pairs:
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10, equal_nan=True)
        (ga,) = _grads(ours, [inp], reduction)
        (gb,) = _grads(theirs, [inp], reduction)
        torch.testing.assert_close(ga, gb, rtol=1e-10, atol=1e-10)


# ----------------------------------------------------------------------------- CUDA


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", list(TOL))
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cuda_parity(dtype, reduction):
    gen = torch.Generator().manual_seed(9)
    p = _probs((64, 5), dtype, gen).cuda().requires_grad_()
    x = torch.randn(64, 5, generator=gen).to(dtype).cuda().requires_grad_()
    y = _probs((64, 5), dtype, gen, edges=False).cuda()
    w = torch.rand(5, generator=gen).to(dtype).cuda()
    for ours, theirs, inp in [
        (binary_cross_entropy(p, y, w, reduction=reduction),
         F.binary_cross_entropy(p, y, w, reduction=reduction), p),
        (binary_cross_entropy_with_logits(x, y, w, w, reduction=reduction),
         F.binary_cross_entropy_with_logits(x, y, weight=w, pos_weight=w,
                                            reduction=reduction), x),
    ]:
        _compare(ours, theirs, dtype)
        _compare(_grads(ours, [inp], reduction)[0], _grads(theirs, [inp], reduction)[0], dtype)


@pytest.mark.cuda
def test_cuda_autocast_probs_works_where_torch_refuses():
    lin = torch.nn.Linear(4, 1).cuda()
    x, y = torch.randn(16, 4, device="cuda"), torch.rand(16, device="cuda")
    with torch.autocast("cuda", dtype=torch.float16):
        probs = torch.sigmoid(lin(x)).squeeze(-1)
        with pytest.raises(RuntimeError, match="unsafe to autocast"):
            F.binary_cross_entropy(probs, y)
        ours = binary_cross_entropy(probs, y)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, F.binary_cross_entropy(probs.float(), y))
    ours.backward()
    assert torch.isfinite(lin.weight.grad).all()


# ----------------------------------------------------------------------------- README


def test_readme_loss_example_runs():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## The loss", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict = {}
    exec(compile(code, "README.md (The loss)", "exec"), namespace)
    assert namespace["binary_cross_entropy"](namespace["p"], namespace["y"]).item() == \
        pytest.approx(0.1892, abs=1e-4)
    assert namespace["logits"].grad is not None
