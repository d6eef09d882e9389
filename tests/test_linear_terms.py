"""The factored Newton terms of a linear model: equal to the autodiff reference (value, gradient,
Hessian, Hessian-vector product), float64 sums over float32 rows equal to those over a float64
copy, a sampled Newton system, and the float64 finish that uses them (no float64 copy of X)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import logreg_torch.fullbatch as fullbatch
import logreg_torch.newton as N
from logreg_torch.config import load_config
from logreg_torch.fullbatch import Rows, SolveState, solve_epoch
from logreg_torch.linear_terms import LinearTerms
from logreg_torch.losses import binary_cross_entropy_with_logits
from logreg_torch.model import LogisticRegression
from logreg_torch.objective import make_objective
from logreg_torch.runtime import resolve_runtime
from logreg_torch.solvers import make_optimizer


def _rows(n=3000, d=6, seed=0):
    """float32 rows on scales 1e-2..1e2 (rounding shows), labels from a logistic model."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g) * torch.logspace(-2, 2, d)
    w = torch.randn(d, generator=g) / torch.logspace(-2, 2, d)
    y = (torch.rand(n, generator=g) < torch.sigmoid(X @ w - 0.5)).float()
    return X, y


def _objectives(X, y, weight=None, *, pos_weight=2.0, smoothing=0.1, l2=1e-3, bias=True,
                chunks=3, stride=1):
    """(autodiff reference on a float64 copy, factored terms on the rows as given)."""
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
    linear = LinearTerms(loss_sum, lambda: iter(mine), len(X), bias=bias, hessian_stride=stride)
    return ref, dataclasses.replace(ref, chunks=lambda: iter(mine), linear=linear)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("layout", ["rows", "columns"])
@pytest.mark.parametrize("weighted", [False, True])
def test_factored_terms_equal_the_autodiff_reference(bias, layout, weighted) -> None:
    X, y = _rows()
    X64 = X.double()
    if layout == "columns":  # as the fused full batch stores X
        X64 = X64.t().contiguous().t()
    weight = torch.rand(len(X), dtype=torch.float64) if weighted else None
    ref, fast = _objectives(X64, y.double(), weight, bias=bias)
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
    ref_cm, fast_cm = _objectives(X.t().contiguous().t(), y, chunks=2)
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
