"""Our hand-written BCE against torch's, on values and gradients (micrograd-style parity)."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import logreg_torch
from logreg_torch import losses_fast
from logreg_torch.losses import (
    BCELoss,
    BCEWithLogitsLoss,
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
)

REDUCTIONS = ["none", "mean", "sum"]
SHAPES = [(), (0,), (7,), (0, 3), (4, 5), (2, 3, 4), (2, 1, 3, 5)]
# Tolerances per dtype: half types differ from torch by rounding of intermediates.
TOL = {
    torch.float64: dict(rtol=1e-12, atol=1e-12),
    torch.float32: dict(rtol=2e-6, atol=1e-6),
    torch.float16: dict(rtol=2e-3, atol=2e-3),
    torch.bfloat16: dict(rtol=2e-2, atol=2e-2),
}


def _probs(shape, dtype=torch.float64, gen=None, edges=True):
    p = torch.rand(shape, generator=gen, dtype=torch.float64)
    if edges and p.numel() >= 4:  # exact 0 and 1 are the edges torch clamps
        flat = p.view(-1)
        flat[0], flat[1] = 0.0, 1.0
    return p.to(dtype)


def _grads(loss, inputs, reduction):
    out = loss if reduction != "none" else loss.sum()
    if loss.numel() == 0 or not out.requires_grad:
        return [torch.zeros_like(t) for t in inputs]
    return torch.autograd.grad(out, inputs, allow_unused=True)


def _compare(ours, theirs, dtype):
    assert ours.dtype == theirs.dtype
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours, theirs, equal_nan=True, **TOL[dtype])


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


# ----------------------------------------------------------------------------- autograd


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradcheck_and_gradgradcheck_probs(reduction):
    gen = torch.Generator().manual_seed(4)
    p = (torch.rand(3, 4, generator=gen, dtype=torch.float64) * 0.8 + 0.1).requires_grad_()
    y = torch.rand(3, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.rand(4, generator=gen, dtype=torch.float64, requires_grad=True)

    def fn(p, y, w):
        return binary_cross_entropy(p, y, w, reduction=reduction)

    assert torch.autograd.gradcheck(fn, (p, y, w))
    assert torch.autograd.gradgradcheck(fn, (p, y, w))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("with_pos_weight", [False, True])
def test_gradcheck_and_gradgradcheck_logits(reduction, with_pos_weight):
    gen = torch.Generator().manual_seed(5)
    x = (torch.randn(3, 4, generator=gen, dtype=torch.float64) * 3).requires_grad_()
    y = torch.rand(3, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.rand(3, 1, generator=gen, dtype=torch.float64, requires_grad=True)
    pw = (torch.rand(4, generator=gen, dtype=torch.float64) + 0.5).requires_grad_()

    def fn(x, y, w, pw):
        return binary_cross_entropy_with_logits(
            x, y, w, pw if with_pos_weight else None, reduction=reduction)

    assert torch.autograd.gradcheck(fn, (x, y, w, pw))
    assert torch.autograd.gradgradcheck(fn, (x, y, w, pw))


@pytest.mark.parametrize("kind", ["probs", "logits"])
def test_fused_path_equals_generic_path(kind):
    """The mean/sum fast path computes the gradient in the forward; create_graph recomputes
    it with differentiable formulas. Both must agree, and a retained graph can be reused."""
    gen = torch.Generator().manual_seed(6)
    x = torch.rand(257, 3, generator=gen) if kind == "probs" else torch.randn(257, 3, generator=gen)
    x.requires_grad_()
    y = torch.rand(257, 3, generator=gen)
    w = torch.rand(3, generator=gen)
    fn = binary_cross_entropy if kind == "probs" else binary_cross_entropy_with_logits
    loss = fn(x, y, w) * 3.0  # a grad_output other than 1
    (fused,) = torch.autograd.grad(loss, x, retain_graph=True)
    (again,) = torch.autograd.grad(loss, x, retain_graph=True)
    (generic,) = torch.autograd.grad(loss, x, create_graph=True)
    torch.testing.assert_close(fused, generic)
    torch.testing.assert_close(again, generic)


@pytest.mark.parametrize("kind", ["probs", "logits"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_many_chunks_match_torch(kind, reduction, monkeypatch):
    """Force many chunks (and a row size that does not divide the chunk) with weights."""
    monkeypatch.setattr(losses_fast, "_CHUNK", 64)
    gen = torch.Generator().manual_seed(7)
    shape = (101, 3, 7)
    x = torch.rand(shape, generator=gen) if kind == "probs" else torch.randn(shape, generator=gen)
    x.requires_grad_()
    y = torch.rand(shape, generator=gen)
    w = torch.rand(3, 1, generator=gen)
    if kind == "probs":
        ours, theirs = (binary_cross_entropy(x, y, w, reduction=reduction),
                        F.binary_cross_entropy(x, y, w, reduction=reduction))
    else:
        pw = torch.rand(7, generator=gen) * 2
        ours, theirs = (binary_cross_entropy_with_logits(x, y, w, pw, reduction=reduction),
                        F.binary_cross_entropy_with_logits(x, y, weight=w, pos_weight=pw,
                                                           reduction=reduction))
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(torch.autograd.grad(ours, x)[0], torch.autograd.grad(theirs, x)[0])


def _count_calls(monkeypatch, name):
    calls = []
    original = getattr(losses_fast, name)

    def spy(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(losses_fast, name, spy)
    return calls


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("weighted", [False, True])
def test_hard_labels_path_matches_torch(dtype, reduction, weighted, monkeypatch):
    """0/1 targets take their own CPU kernel (one log-sigmoid of +-x); across chunks, with
    weights and logits far in both tails it must give torch's values and gradients."""
    monkeypatch.setattr(losses_fast, "_CHUNK", 64)
    calls = _count_calls(monkeypatch, "_hard_label_chunk")
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(300, 3, generator=gen, dtype=dtype) * 5
    x[:8, 0] = torch.tensor([40.0, -40.0, 1e4, -1e4, 0.0, -0.0, 88.0, -88.0], dtype=dtype)
    x.requires_grad_()
    y = torch.randint(0, 2, (300, 3), generator=gen).to(dtype)
    w = torch.rand(3, generator=gen, dtype=dtype) if weighted else None
    ours = binary_cross_entropy_with_logits(x, y, w, reduction=reduction)
    theirs = F.binary_cross_entropy_with_logits(x, y, w, reduction=reduction)
    assert len(calls) == math.ceil(300 / (64 // 3))  # every chunk took the hard-label kernel
    _compare(ours, theirs, dtype)
    _compare(torch.autograd.grad(ours, x)[0], torch.autograd.grad(theirs, x)[0], dtype)


def test_hard_labels_tails_are_exact_in_float64():
    # loss and gradient of logit +-40 with the label it predicts: e^-40 (1 + O(e^-40))
    x = torch.tensor([40.0, -40.0], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([1.0, 0.0], dtype=torch.float64)
    loss = binary_cross_entropy_with_logits(x, y, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x)
    tail = math.exp(-40)
    assert loss.item() == pytest.approx(2 * tail, rel=1e-15)
    assert grad.tolist() == pytest.approx([-tail, tail], rel=1e-15)


def test_almost_hard_labels_take_the_general_path(monkeypatch):
    """A target of 1e-30 is not a 0/1 label: its y * |x| term (5e-29 here) is far larger than
    the rest of that element's loss (e^-50), so treating it as 0 would be wrong."""
    calls = _count_calls(monkeypatch, "_hard_label_chunk")
    x = torch.tensor([-50.0, 3.0, -2.0], dtype=torch.float64)
    y = torch.tensor([1e-30, 1.0, 0.0], dtype=torch.float64)
    ours = binary_cross_entropy_with_logits(x, y, reduction="none")
    total = binary_cross_entropy_with_logits(x, y, reduction="sum")
    assert not calls
    expected = x.clamp_min(0) - y * x + torch.log1p(torch.exp(-x.abs()))
    torch.testing.assert_close(ours, expected, rtol=1e-15, atol=0)
    assert total.item() == pytest.approx(expected.sum().item(), rel=1e-15)
    assert ours[0].item() == pytest.approx(5e-29, rel=1e-6)


def test_threads_do_not_share_scratch_tensors(monkeypatch):
    """The CPU kernels reuse scratch tensors across calls; two threads at once must not see
    each other's."""
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setattr(losses_fast, "_CHUNK", 256)
    gen = torch.Generator().manual_seed(12)
    hard = [torch.randint(0, 2, (5000,), generator=gen).float() for _ in range(2)]
    targets = hard + [torch.rand(5000, generator=gen)]  # two hard-label cases and a soft one
    cases = [(torch.randn(5000, generator=gen), y) for y in targets]

    def run(case):
        x, y = case
        x = x.clone().requires_grad_()
        out = []
        for _ in range(20):
            loss = binary_cross_entropy_with_logits(x, y)
            out.append((loss.detach(), torch.autograd.grad(loss, x)[0]))
        return out

    expected = [run(case) for case in cases]
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(run, cases))
    for got, want in zip(results, expected, strict=True):
        for (loss, grad), (loss0, grad0) in zip(got, want, strict=True):
            assert torch.equal(loss, loss0) and torch.equal(grad, grad0)


def test_weight_and_pos_weight_are_differentiable():
    x = torch.randn(5, 2, dtype=torch.float64)
    y = torch.rand(5, 2, dtype=torch.float64)
    w = torch.rand(2, dtype=torch.float64, requires_grad=True)
    pw = torch.rand(2, dtype=torch.float64, requires_grad=True)
    loss = binary_cross_entropy_with_logits(x, y, w, pw, reduction="sum")
    gw, gpw = torch.autograd.grad(loss, [w, pw])
    # d/dw of sum(w * l) is the column sums of the unweighted loss
    unweighted = F.binary_cross_entropy_with_logits(x, y, pos_weight=pw.detach(), reduction="none")
    torch.testing.assert_close(gw, unweighted.sum(0))
    expected_gpw = (w.detach() * y * F.softplus(-x)).sum(0)
    torch.testing.assert_close(gpw, expected_gpw)


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


# ----------------------------------------------------------------------------- bad input


def _both_raise(exc, ours, theirs, match):
    if theirs is not None:
        with pytest.raises(exc):
            theirs()
    with pytest.raises(exc, match=match):
        ours()


def test_shape_mismatch_names_both_shapes():
    p, y = torch.rand(4, 3), torch.rand(4, 2)
    _both_raise(ValueError, lambda: binary_cross_entropy(p, y),
                lambda: F.binary_cross_entropy(p, y),
                r"target shape \(4, 2\).*input shape \(4, 3\)")
    _both_raise(ValueError, lambda: binary_cross_entropy_with_logits(p, y),
                lambda: F.binary_cross_entropy_with_logits(p, y), r"\(4, 2\).*\(4, 3\)")


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_probabilities_out_of_range_name_the_tensor(bad):
    p, y = torch.rand(6), torch.rand(6)
    p_bad, y_bad = p.clone(), y.clone()
    p_bad[3], y_bad[3] = bad, bad
    what = "NaN" if bad != bad else r"\[0, 1\]"
    _both_raise(RuntimeError, lambda: binary_cross_entropy(p_bad, y),
                lambda: F.binary_cross_entropy(p_bad, y), rf"input \(probabilities\).*{what}")
    _both_raise(RuntimeError, lambda: binary_cross_entropy(p, y_bad),
                lambda: F.binary_cross_entropy(p, y_bad), rf"target.*{what}")
    # torch does not check logits' targets; we do, unless check_range=False
    _both_raise(RuntimeError, lambda: binary_cross_entropy_with_logits(p, y_bad), None,
                rf"target.*{what}")


def test_out_of_range_found_in_a_later_chunk(monkeypatch):
    monkeypatch.setattr(losses_fast, "_CHUNK", 8)
    y = torch.rand(100)
    y[95] = 2.0
    with pytest.raises(RuntimeError, match=r"found values in \[.*, 2\]"):
        binary_cross_entropy_with_logits(torch.randn(100), y)


def test_check_range_false_skips_checks_and_matches_torch():
    x, y = torch.randn(8), torch.rand(8) * 3 - 1
    ours = binary_cross_entropy_with_logits(x, y, check_range=False)
    torch.testing.assert_close(ours, F.binary_cross_entropy_with_logits(x, y))
    binary_cross_entropy(torch.rand(8), y.clamp(0, 1), check_range=False)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_check_range_false_probs_returns_the_formula_for_out_of_range_values(reduction):
    """No check, no error: the formula's value, NaN where it takes the log of a negative
    number, and a target outside [0, 1] weighs the log terms as written."""
    p = torch.tensor([0.2, 1.5, -0.5, 0.7], dtype=torch.float64)
    y = torch.tensor([1.0, 0.0, 1.0, 2.0], dtype=torch.float64)
    with pytest.raises(RuntimeError):
        binary_cross_entropy(p, y, reduction=reduction)
    out = binary_cross_entropy(p, y, reduction="none", check_range=False)
    nan = float("nan")
    expected = [-math.log(0.2), nan, nan, math.log(0.3) - 2 * math.log(0.7)]
    torch.testing.assert_close(out, torch.tensor(expected, dtype=torch.float64), equal_nan=True)
    reduced = binary_cross_entropy(p, y, reduction=reduction, check_range=False)
    assert reduced.shape == (out.shape if reduction == "none" else ())
    finite = binary_cross_entropy(p[[0, 3]], y[[0, 3]], reduction=reduction, check_range=False)
    want = torch.tensor([expected[0], expected[3]], dtype=torch.float64)
    want = {"none": want, "mean": want.mean(), "sum": want.sum()}[reduction]
    torch.testing.assert_close(finite, want)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool, torch.uint8])
def test_integer_and_bool_targets_rejected(dtype):
    p = torch.rand(5)
    y = (torch.rand(5) > 0.5).to(dtype)
    _both_raise(RuntimeError, lambda: binary_cross_entropy(p, y),
                lambda: F.binary_cross_entropy(p, y), rf"target must be a floating-point.*{dtype}")
    _both_raise(RuntimeError, lambda: binary_cross_entropy_with_logits(p, y),
                lambda: F.binary_cross_entropy_with_logits(p, y), "target must be a floating")


def test_integer_input_rejected():
    _both_raise(RuntimeError, lambda: binary_cross_entropy(torch.ones(3, dtype=torch.long),
                                                           torch.ones(3)),
                lambda: F.binary_cross_entropy(torch.ones(3, dtype=torch.long), torch.ones(3)),
                "input must be a floating-point")


def test_mismatched_dtypes_rejected():
    p, y = torch.rand(5), torch.rand(5, dtype=torch.float64)
    _both_raise(RuntimeError, lambda: binary_cross_entropy(p, y),
                lambda: F.binary_cross_entropy(p, y), r"target dtype torch.float64.*torch.float32")
    _both_raise(RuntimeError, lambda: binary_cross_entropy_with_logits(p, y), None,
                "does not match input dtype")


@pytest.mark.parametrize("reduction", ["avg", "Mean", "", None])
def test_unknown_reduction_lists_valid_ones(reduction):
    p, y = torch.rand(3), torch.rand(3)
    _both_raise(ValueError, lambda: binary_cross_entropy(p, y, reduction=reduction),
                lambda: F.binary_cross_entropy(p, y, reduction=reduction), "'none', 'mean', 'sum'")
    _both_raise(ValueError, lambda: binary_cross_entropy_with_logits(p, y, reduction=reduction),
                None, "'none', 'mean', 'sum'")
    with pytest.raises(ValueError, match="reduction"):
        BCELoss(reduction=reduction)


@pytest.mark.parametrize("eps", [-0.1, 1.0, 2.0])
def test_label_smoothing_out_of_range(eps):
    p, y = torch.rand(3), torch.rand(3)
    with pytest.raises(RuntimeError, match=r"label_smoothing must be in \[0, 1\)"):
        binary_cross_entropy(p, y, label_smoothing=eps)
    with pytest.raises(RuntimeError, match="label_smoothing"):
        BCEWithLogitsLoss(label_smoothing=eps)


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
