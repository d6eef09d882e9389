"""Our hand-written BCE against torch's under autograd: gradcheck and gradgradcheck, the fused
gradient against the generic one, the CPU kernels' routes (many chunks, 0/1 labels, minibatches,
threads) and gradients w.r.t. weight and pos_weight."""

import math

import pytest
import torch
import torch.nn.functional as F
from losses_helpers import REDUCTIONS, _compare, _probs

from logreg_torch import losses, losses_fast
from logreg_torch.losses import binary_cross_entropy, binary_cross_entropy_with_logits

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


@pytest.mark.parametrize("kind", ["probs", "logits-hard", "logits-soft"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("small_hard", [True, False])
def test_minibatch_routes_equal_reference_path(kind, dtype, weighted, small_hard, monkeypatch):
    """A minibatch takes a route with fewer ops: 0/1 logits labels as differentiable ops
    (``small_hard_label_loss``), the rest as one chunk (the target's range and 0/1 checks from
    one product, the probabilities' range read off the result). Same values and gradients as
    the reference formulas, both reductions, shapes 1-d and 2-d, calls repeated (the cached
    scratch views), double backward of the differentiable-ops route."""
    if not small_hard:
        monkeypatch.setattr(losses_fast, "SMALL_HARD", 0)
    routes = _count_calls(monkeypatch, "_one_chunk")
    hard = _count_calls(monkeypatch, "_hard_label_chunk")
    gen = torch.Generator().manual_seed(21)
    for shape in [(4096,), (33, 7), (4096,)]:
        if kind == "probs":
            x = _probs(shape, dtype, gen)
        else:
            x = torch.randn(shape, generator=gen, dtype=dtype) * 4
        y = torch.rand(shape, generator=gen, dtype=dtype)
        y = y.round() if kind != "logits-soft" else y
        w = torch.rand(shape[-1:], generator=gen, dtype=dtype) if weighted else None
        fn = binary_cross_entropy if kind == "probs" else binary_cross_entropy_with_logits
        ref = losses._probs_reference if kind == "probs" else losses._logits_reference
        for reduction in ["mean", "sum"]:
            xr = x.clone().requires_grad_()
            ours = fn(xr, y, w, reduction=reduction)
            theirs = ref(xr, y, None, w, reduction)
            _compare(ours, theirs, dtype)
            _compare(torch.autograd.grad(ours, xr)[0], torch.autograd.grad(theirs, xr)[0], dtype)
    composite = kind == "logits-hard" and small_hard
    assert len(routes) == (0 if composite else 6)
    assert len(hard) == (6 if kind == "logits-hard" and not small_hard else 0)
    if composite:  # Hessian-vector products through the autograd of the composite
        xr = x.clone().requires_grad_()
        (g,) = torch.autograd.grad(fn(xr, y, w), xr, create_graph=True)
        (hv,) = torch.autograd.grad(g.sum(), xr)
        (gr,) = torch.autograd.grad(ref(xr, y, None, w, "mean"), xr, create_graph=True)
        _compare(hv, torch.autograd.grad(gr.sum(), xr)[0], dtype)


def test_one_chunk_route_range_errors_and_weight_nans():
    p, y = torch.rand(50), torch.rand(50).round()
    p_bad, y_bad = p.clone(), y.clone()
    p_bad[7], y_bad[9] = 1.5, -0.5
    with pytest.raises(RuntimeError, match=r"input \(probabilities\).*\[.*, 1.5\]"):
        binary_cross_entropy(p_bad, y_bad)  # both wrong: the input named first, as before
    with pytest.raises(RuntimeError, match=r"target.*\[-0.5, "):
        binary_cross_entropy(p, y_bad)
    with pytest.raises(RuntimeError, match=r"target.*\[-0.5, "):
        binary_cross_entropy_with_logits(p, y_bad)
    # a NaN that comes from the weights (inf * a zero loss) is a result, not a range error
    w = torch.ones(50)
    w[0], p[0], y[0] = float("inf"), 1.0, 1.0
    assert binary_cross_entropy(p, y, w).isnan()
    assert F.binary_cross_entropy(p, y, w).isnan()
    y_neg_zero = torch.full((50,), -0.0)  # -0.0 is a valid 0 label
    torch.testing.assert_close(binary_cross_entropy_with_logits(p, y_neg_zero),
                               F.binary_cross_entropy_with_logits(p, y_neg_zero))


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
