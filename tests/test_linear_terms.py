"""The factored Newton terms of a linear model: equal to the autodiff reference (value, gradient,
Hessian, Hessian-vector product), float64 sums over float32 rows equal to those over a float64
copy, a sampled Newton system, and the float64 finish that uses them (no float64 copy of X)."""

from __future__ import annotations

import dataclasses
import threading

import pytest
import torch

import logreg_torch.fullbatch as fullbatch
import logreg_torch.linear_terms as linear_terms
import logreg_torch.newton as N
from logreg_torch.config import load_config
from logreg_torch.fullbatch import Rows, SolveState, solve_epoch
from logreg_torch.linear_terms import LinearTerms, _autodiff_row_terms
from logreg_torch.losses import binary_cross_entropy_with_logits
from logreg_torch.model import LogisticRegression
from logreg_torch.objective import Objective, make_objective
from logreg_torch.runtime import resolve_runtime
from logreg_torch.solvers import make_optimizer


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)  # the random points and weights below: the same in every run


def _rows(n=3000, d=6, seed=0):
    """float32 rows on scales 1e-2..1e2 (rounding shows), labels from a logistic model."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g) * torch.logspace(-2, 2, d)
    w = torch.randn(d, generator=g) / torch.logspace(-2, 2, d)
    y = (torch.rand(n, generator=g) < torch.sigmoid(X @ w - 0.5)).float()
    return X, y


def _objectives(X, y, weight=None, *, pos_weight=2.0, smoothing=0.1, l2=1e-3, bias=True,
                chunks=3, stride=1, closed_form=False):
    """(autodiff reference on a float64 copy, factored terms on the rows as given; l' and l''
    by autodiff of the loss, or with ``closed_form`` the objective's formulas)."""
    model = LogisticRegression(X.shape[1], bias=bias).double()
    pw = torch.tensor(pos_weight, dtype=torch.float64)

    def loss_sum(z, t, w):
        return binary_cross_entropy_with_logits(z, t, w, pos_weight=pw.to(z.dtype),
                                                label_smoothing=smoothing, reduction="sum")

    def penalty(params):
        return 0.5 * l2 * params["linear.weight"].pow(2).sum()

    def parts(X, y, weight):
        idx = torch.arange(len(X)).tensor_split(chunks)
        return [(X[i], y[i], None if weight is None else weight[i]) for i in idx]

    ref_parts = parts(X.double(), y.double(), None if weight is None else weight.double())
    ref = N.ChunkedObjective(model, loss_sum, penalty, lambda: iter(ref_parts), len(X))
    mine = parts(X, y, weight)
    row_terms = _objective(pw, smoothing).row_terms if closed_form else None
    linear = LinearTerms(loss_sum, lambda: iter(mine), len(X), bias=bias, hessian_stride=stride,
                         row_terms=row_terms)
    return ref, dataclasses.replace(ref, chunks=lambda: iter(mine), linear=linear)


def _objective(pos_weight, smoothing) -> Objective:
    return Objective(from_logits=True, pos_weight=pos_weight, label_smoothing=smoothing, l2=0.0,
                     l1=0.0, check_range=True)


@pytest.mark.parametrize("pos_weight", [None, 0.3, 2.0])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("weighted", [False, True])
def test_closed_form_row_terms_equal_autodiff_of_the_loss(pos_weight, smoothing,
                                                          weighted) -> None:
    # The per-row l' and l'' the finish uses, against autodiff of the loss itself; logits out
    # to +-40 (the tails) and soft targets as well as hard ones.
    g = torch.Generator().manual_seed(1)
    z = torch.cat([torch.randn(500, generator=g, dtype=torch.float64) * 4,
                   torch.tensor([-40.0, -20.0, 0.0, 20.0, 40.0], dtype=torch.float64)])
    y = torch.cat([(torch.rand(300, generator=g) < 0.5).double(),
                   torch.rand(len(z) - 300, generator=g, dtype=torch.float64)])
    w = torch.rand(len(z), generator=g, dtype=torch.float64) if weighted else None
    pw = None if pos_weight is None else torch.tensor(pos_weight, dtype=torch.float64)
    objective = _objective(pw, smoothing)
    value, d1, d2 = objective.row_terms(z, y, w, 2)
    ref = _autodiff_row_terms(lambda z, t, w: objective.data_loss(z, t, w) * len(z), z, y, w, 2)
    torch.testing.assert_close(value, ref[0], rtol=1e-14, atol=0)
    torch.testing.assert_close(d1, ref[1], rtol=1e-13, atol=1e-300)
    torch.testing.assert_close(d2, ref[2], rtol=1e-12, atol=1e-300)
    assert objective.row_terms(z, y, w, 1)[2] is None


def test_the_lean_logits_loss_is_the_loss_bit_for_bit() -> None:
    # the finish's per-row loss without pos_weight: fewer temporaries, the same arithmetic
    from logreg_torch.loss.formulas import bcel_loss, bcel_loss_lean

    g = torch.Generator().manual_seed(4)
    for dtype in (torch.float64, torch.float32):
        z = torch.cat([torch.randn(4000, generator=g, dtype=dtype) * 15,
                       torch.tensor([-1e4, -40.0, -0.0, 0.0, 40.0, 1e4], dtype=dtype)])
        for y in ((torch.rand(len(z), generator=g) < 0.5).to(dtype),
                  torch.rand(len(z), generator=g, dtype=dtype)):
            assert torch.equal(bcel_loss_lean(z, y), bcel_loss(z, y, None))


@pytest.mark.parametrize("order", [0, 1, 2])
@pytest.mark.parametrize("stride", [1, 3])
def test_blocks_shared_out_to_threads_give_the_one_thread_sums(monkeypatch, order,
                                                               stride) -> None:
    # the pass deals its blocks to torch.get_num_threads() threads; sums in another order only
    monkeypatch.setattr(linear_terms, "BLOCK_ROWS", 300)  # 11 blocks, a short last one
    X, y = _rows(n=3100)
    weight = torch.rand(len(X), generator=torch.Generator().manual_seed(5))
    _, obj = _objectives(X, y, weight, chunks=2, stride=stride, closed_form=True)
    theta = torch.linspace(-0.3, 0.3, len(N.flat_params(obj.model)), dtype=torch.float64)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = obj.linear(theta, order), obj.linear.sampled_hessian(theta)
        torch.set_num_threads(3)
        seen = []
        real = linear_terms.LinearTerms._sum_blocks

        def recording(self, *args):
            seen.append((args[-1], torch.get_num_threads(), threading.current_thread().name))
            return real(self, *args)

        monkeypatch.setattr(linear_terms.LinearTerms, "_sum_blocks", recording)
        many = obj.linear(theta, order), obj.linear.sampled_hessian(theta)
        assert torch.get_num_threads() == 3  # given back
    finally:
        torch.set_num_threads(before)
    # two chunks, three threads each, torch at one thread in each, none the caller's
    assert sorted(slot for slot, _, _ in seen) == [0, 0, 1, 1, 2, 2]
    assert {t for _, t, _ in seen} == {1}
    assert threading.current_thread().name not in {name for _, _, name in seen}
    (v1, g1, h1), s1 = one
    (v3, g3, h3), s3 = many
    torch.testing.assert_close(v3, v1, rtol=1e-14, atol=0)
    assert (g3 is None) == (g1 is None) and (h3 is None) == (h1 is None)
    if g1 is not None:
        torch.testing.assert_close(g3, g1, rtol=1e-12, atol=1e-15)
    # Hessians: float32 block products summed in float64, in another order; a sampled one is
    # one float32 product per thread over its rows instead of one over all
    if h1 is not None:
        torch.testing.assert_close(h3, h1, rtol=1e-12 if stride == 1 else 1e-5, atol=1e-12)
    torch.testing.assert_close(s3, s1, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("layout", ["rows", "columns"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("closed_form", [False, True])
def test_factored_terms_equal_the_autodiff_reference(bias, layout, weighted,
                                                     closed_form) -> None:
    X, y = _rows()
    X64 = X.double()
    if layout == "columns":  # as the fused full batch stores X
        X64 = X64.t().contiguous().t()
    weight = torch.rand(len(X), dtype=torch.float64) if weighted else None
    ref, fast = _objectives(X64, y.double(), weight, bias=bias, closed_form=closed_form)
    theta = torch.randn(len(N.flat_params(ref.model)), dtype=torch.float64) * 0.3
    (f0, g0, H0), (f1, g1, H1) = N.evaluate(ref, theta, 2), N.evaluate(fast, theta, 2)
    torch.testing.assert_close(f1, f0, rtol=1e-13, atol=0)
    torch.testing.assert_close(g1, g0, rtol=1e-11, atol=1e-13)
    torch.testing.assert_close(H1, H0, rtol=1e-11, atol=1e-13)
    v = torch.randn_like(theta)
    torch.testing.assert_close(N.hvp(fast, theta, v), N.hvp(ref, theta, v), rtol=1e-11,
                               atol=1e-13)
    torch.testing.assert_close(N.hvp(fast, theta, v), H1 @ v, rtol=1e-10, atol=1e-12)


def test_float64_sums_over_float32_rows_equal_a_float64_copy() -> None:
    # The finish: theta in float64, the rows as stored (float32, column-major). Value and
    # gradient are float64 sums (each block converted in a reused buffer); the Newton system
    # is a float32 product, close enough to set the direction.
    X, y = _rows(n=40_000)
    ref, fast = _objectives(X, y, chunks=2)
    ref_cm, fast_cm = _objectives(X.t().contiguous().t(), y, chunks=2, closed_form=True)
    theta = torch.randn(X.shape[1] + 1, dtype=torch.float64) * 0.3
    f0, g0, H0 = N.evaluate(ref, theta, 2)
    for obj in (fast, fast_cm):
        f1, g1, H1 = N.evaluate(obj, theta, 2)
        assert f1.dtype == g1.dtype == torch.float64
        torch.testing.assert_close(f1, f0, rtol=1e-14, atol=0)
        torch.testing.assert_close(g1, g0, rtol=1e-12, atol=1e-14)
        # float32 products: close relative to the scale of each entry's row and column
        scale = H0.diagonal().sqrt()
        assert float(((H1 - H0) / torch.outer(scale, scale)).abs().max()) < 3e-5


def test_a_sampled_newton_system_reaches_the_same_optimum() -> None:
    X, y = _rows(n=8000)
    _, ref = _objectives(X, y)  # every row (the first test holds it to autodiff)
    _, sampled = _objectives(X, y, stride=8)
    H = N.evaluate(ref, N.flat_params(ref.model), 2)[2]
    Hs = N.evaluate(sampled, N.flat_params(ref.model), 2)[2]
    assert 0 < float((Hs - H).norm() / H.norm()) < 0.2  # an estimate, not the system
    start = N.flat_params(ref.model)
    t0, r0 = N.newton(ref, start, tol=1e-11, max_iter=30)
    t1, r1 = N.newton(sampled, start, tol=1e-11, max_iter=30)
    assert r0.converged and r1.converged, (r0, r1)
    torch.testing.assert_close(t1, t0, rtol=1e-8, atol=1e-9)


def _stalled_fit(X, y, tol, l2, **kw):
    """A float32 L-BFGS solve that rounding stops above tol, finished in float64."""
    cfg = load_config(None, ["train.device=cpu", "optim.name=lbfgs", f"optim.tol={tol!r}",
                             "train.batch_size=null", f"loss.l2={l2!r}", "train.epochs=1",
                             "optim.max_iter=200"])
    runtime = resolve_runtime("cpu", "fp32")
    objective = make_objective(cfg, y, runtime.device, runtime.dtype)
    model = LogisticRegression(X.shape[1])
    state = SolveState()
    solve_epoch(model, make_optimizer(cfg, model), objective, Rows(X, y, None, len(X)),
                runtime, cfg.optim, state, cfg.optim.max_iter, **kw)
    return model, state


def test_the_finish_equals_the_float64_copy_reference(monkeypatch) -> None:
    X, y = _rows(n=20_000, d=8)
    X = ((X - X.mean(0)) / X.std(0)).t().contiguous().t()
    copies = []
    monkeypatch.setattr(Rows, "as_dtype", lambda self, dtype: copies.append(dtype) or self)
    monkeypatch.setattr(fullbatch, "FINISH_HESSIAN_ROWS", 1000)  # a sampled system here too
    model, state = _stalled_fit(X, y, 1e-10, 1e-4)
    assert state.handover is not None and state.report.converged, state
    assert copies == []  # the logistic finish never copies the rows to float64
    # The reference: the same objective on a float64 copy, Newton with the autodiff Hessian
    cfg = load_config(None, ["optim.name=newton", "train.batch_size=null", "loss.l2=1e-4"])
    objective = make_objective(cfg, y.double(), torch.device("cpu"), torch.float64)
    ref_model = LogisticRegression(X.shape[1]).double()
    X64, y64 = X.double(), y.double()
    obj = N.ChunkedObjective(ref_model, lambda z, t, w: objective.data_loss(z, t) * len(z),
                             lambda p: objective.penalty_of(list(p.values())),
                             lambda: iter([(X64, y64, None)]), len(X))
    theta, report = N.newton(obj, N.flat_params(ref_model), tol=1e-12, max_iter=30)
    assert report.converged
    torch.testing.assert_close(N.flat_params(model).double(), theta, rtol=2e-7, atol=1e-8)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("stride", [1, 6])
def test_sampled_hessian_alone_is_the_system_a_pass_samples(monkeypatch, bias, weighted,
                                                            stride) -> None:
    monkeypatch.setattr(linear_terms, "BLOCK_ROWS", 700)  # several blocks per chunk, a short last
    X, y = _rows(n=5000)
    X = X.t().contiguous().t()  # column-major, as the fused full batch stores it
    weight = torch.rand(len(X), generator=torch.Generator().manual_seed(3)) if weighted else None
    _, obj = _objectives(X, y, weight, bias=bias, stride=stride, closed_form=True)
    theta = torch.randn(len(N.flat_params(obj.model)), dtype=torch.float64,
                        generator=torch.Generator().manual_seed(2)) * 0.05
    H_pass = obj.linear(theta, 2)[2]
    H_alone = obj.linear.sampled_hessian(theta)
    scale = H_pass.diagonal().sqrt()
    assert float(((H_alone - H_pass) / torch.outer(scale, scale)).abs().max()) < 3e-5
    _, full = _objectives(X, y, weight, bias=bias, closed_form=True)
    gap = float((H_alone - full.linear(theta, 2)[2]).norm() / H_pass.norm())
    # a sample (~1e-2 off), or every row (float32 logits and products: up to ~1e-6 off)
    assert gap > 1e-3 if stride > 1 else gap < 1e-5


@pytest.mark.parametrize("stride", [1, 2])
def test_sampled_hessian_skips_chunks_without_rows(stride) -> None:
    # a rank or a stream can hand over a chunk with no rows: it adds nothing to the system
    X, y = _rows(n=6)
    _, obj = _objectives(X, y, chunks=9, stride=stride, closed_form=True)  # three are empty
    theta = torch.linspace(-0.2, 0.2, len(N.flat_params(obj.model)), dtype=torch.float64)
    H_pass = obj.linear(theta, 2)[2]
    scale = H_pass.diagonal().sqrt()  # float32 logits against float64 ones, relative
    gap = (obj.linear.sampled_hessian(theta) - H_pass) / torch.outer(scale, scale)
    assert float(gap.abs().max()) < 3e-5


def _near_optimum(n=8000):
    """A sampled objective (standardized rows), its optimum, and a point next to it, as a
    float32 stall leaves one."""
    X, y = _rows(n=n)
    ref, sampled = _objectives((X - X.mean(0)) / X.std(0), y, stride=8, closed_form=True)
    t0, r0 = N.newton(ref, N.flat_params(ref.model), tol=1e-12, max_iter=30)
    assert r0.converged
    g = torch.Generator().manual_seed(1)
    return sampled, t0, t0 + 1e-5 * torch.randn(len(t0), generator=g, dtype=torch.float64)


def _passes(monkeypatch) -> list[int]:
    calls = []
    real = LinearTerms.__call__

    def counted(self, theta, order):
        calls.append(order)
        return real(self, theta, order)

    monkeypatch.setattr(LinearTerms, "__call__", counted)
    return calls


def test_a_seeded_newton_step_converges_in_one_pass_over_the_rows(monkeypatch) -> None:
    sampled, t0, start = _near_optimum()
    g = N.evaluate(sampled, start, 1)[1]
    assert float(g.abs().max()) > 2e-6  # not converged where it starts
    calls = _passes(monkeypatch)
    theta, report = N.newton_seeded(sampled, start, g, tol=5e-7, max_iter=10)
    assert calls == [1] and report.n_iter == 1 and report.converged, (calls, report)
    f, g = N.evaluate(sampled, theta, 1)[:2]
    assert float(g.abs().max()) == report.grad_max <= 5e-7
    assert 0 <= float(f - N.evaluate(sampled, t0, 0)[0]) < 1e-11


@pytest.mark.parametrize("seed", ["wrong sign", "far start"])
def test_a_seeded_step_that_does_not_converge_hands_over_to_newton(monkeypatch, seed) -> None:
    sampled, t0, start = _near_optimum()
    if seed == "far start":  # a full step from zeros overshoots: Newton's line search is needed
        start = torch.zeros_like(start)
    g = N.evaluate(sampled, start, 1)[1]
    seed_grad = -g if seed == "wrong sign" else g
    calls = _passes(monkeypatch)
    theta, report = N.newton_seeded(sampled, start, seed_grad, tol=1e-9, max_iter=30)
    assert len(calls) > 1 and report.converged, (calls, report)
    assert float(N.evaluate(sampled, theta, 1)[1].abs().max()) <= 1e-9
    torch.testing.assert_close(theta, t0, rtol=1e-7, atol=1e-8)


def test_the_finish_steps_on_the_stall_gradient_and_reads_the_rows_once(monkeypatch) -> None:
    X, y = _rows(n=20_000, d=8)
    X = ((X - X.mean(0)) / X.std(0)).t().contiguous().t()
    monkeypatch.setattr(fullbatch, "FINISH_HESSIAN_ROWS", 1000)
    calls = _passes(monkeypatch)
    _, state = _stalled_fit(X, y, 2e-7, 1e-4)  # float32 stalls at ~1.2e-6: one step to go
    assert state.handover is not None and state.report.converged, state
    assert calls == [1], calls  # one float64 pass: the step came from the float32 gradient
