"""Newton's method: quadratic convergence, the autodiff Hessian, CG, chunks, weights, the floor."""

import numpy as np
import pytest
import torch

import logreg_torch.newton as N
from logreg_torch.losses import binary_cross_entropy_with_logits
from logreg_torch.model import LogisticRegression


def _problem(n=2000, d=5, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=dtype)
    w = torch.randn(d, generator=g, dtype=dtype)
    y = (torch.rand(n, generator=g, dtype=dtype) < torch.sigmoid(X @ w + 0.3)).to(dtype)
    return X, y


def _objective(X, y, *, l2=0.0, pos_weight=None, weight=None, chunks=1):
    model = LogisticRegression(X.shape[1]).to(X.dtype)
    pw = None if pos_weight is None else torch.tensor(pos_weight, dtype=X.dtype)

    def loss_sum(z, t, w):
        return binary_cross_entropy_with_logits(z, t, w, pos_weight=pw, reduction="sum")

    def penalty(params):
        return 0.5 * l2 * params["linear.weight"].pow(2).sum()

    idx = torch.arange(len(X)).tensor_split(chunks)
    parts = [(X[i], y[i], None if weight is None else weight[i]) for i in idx]
    return N.ChunkedObjective(model, loss_sum, penalty, lambda: iter(parts), len(X))


def test_unregularized_newton_converges_quadratically_in_fp64() -> None:
    X, y = _problem()
    obj = _objective(X, y)
    trace = []
    theta, report = N.newton(obj, N.flat_params(obj.model), tol=1e-10, max_iter=15,
                             on_iter=trace.append)
    assert report.converged and report.reason == "tol"
    assert report.grad_max <= 1e-10 and report.n_iter <= 15
    g = [p.grad_max for p in trace]
    # quadratic: once close, each gradient is at most about the square of the one before
    assert g[-1] <= 10 * g[-2] ** 2
    assert [p.iteration for p in trace] == list(range(report.n_iter + 1))


def test_hessian_matches_torch_on_an_independent_objective() -> None:
    X, y = _problem(n=200, d=3)
    theta = torch.tensor([0.5, -1.0, 0.25, 0.1], dtype=torch.float64)

    def reference(t):  # torch's own BCE, torch's own Hessian
        z = X @ t[:3] + t[3]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            z, y, pos_weight=torch.tensor(3.0, dtype=torch.float64))
        return loss + 0.5 * 0.2 * t[:3].pow(2).sum()

    value, grad, hess = N.evaluate(_objective(X, y, l2=0.2, pos_weight=3.0), theta)
    assert hess.shape == (4, 4)
    torch.testing.assert_close(value, reference(theta))
    torch.testing.assert_close(grad, torch.func.grad(reference)(theta))
    torch.testing.assert_close(hess, torch.autograd.functional.hessian(reference, theta))


def test_conjugate_gradient_path_reaches_the_dense_optimum(monkeypatch) -> None:
    X, y = _problem(n=1500, d=30)
    dense, rep = N.newton(_objective(X, y, l2=0.01), torch.zeros(31, dtype=torch.float64),
                          tol=1e-10, max_iter=20)
    monkeypatch.setattr(N, "CG_MIN_PARAMS", 10)
    calls = []
    real = N.hvp
    monkeypatch.setattr(N, "hvp", lambda *a: calls.append(1) or real(*a))
    cg, rep_cg = N.newton(_objective(X, y, l2=0.01), torch.zeros(31, dtype=torch.float64),
                          tol=1e-10, max_iter=20)
    assert calls and rep.converged and rep_cg.converged
    torch.testing.assert_close(cg, dense, rtol=0, atol=1e-8)


def test_chunks_give_the_one_chunk_solution() -> None:
    X, y = _problem(n=1000, d=6)
    one, _ = N.newton(_objective(X, y), torch.zeros(7, dtype=torch.float64), tol=1e-11,
                      max_iter=20)
    many, _ = N.newton(_objective(X, y, chunks=7), torch.zeros(7, dtype=torch.float64),
                       tol=1e-11, max_iter=20)
    torch.testing.assert_close(many, one, rtol=0, atol=1e-10)


def test_reduce_is_applied_to_value_gradient_and_hessian() -> None:
    # Two "ranks" each holding half the rows: summing their data terms (what all_reduce does)
    # must give the whole-data objective, with the penalty counted once.
    X, y = _problem(n=400, d=3)
    theta = torch.tensor([0.2, 0.1, -0.3, 0.05], dtype=torch.float64)
    whole = N.evaluate(_objective(X, y, l2=0.5), theta)
    mine = _objective(X[:150], y[:150], l2=0.5)
    peer = _objective(X[150:], y[150:], l2=0.0)
    mine.n_total = peer.n_total = 400
    peer_terms = iter(N.evaluate(peer, theta))  # value, gradient, Hessian: reduced in order

    def reduce(t):
        t += next(peer_terms)

    mine.reduce = reduce
    for a, b in zip(N.evaluate(mine, theta), whole, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("class_weight", [None, {0: 1.0, 1: 2.5}])
def test_l2_pos_weight_and_sample_weights_match_sklearn(class_weight) -> None:
    sklearn = pytest.importorskip("sklearn.linear_model")
    X, y = _problem(n=800, d=4, seed=3)
    sw = torch.rand(800, generator=torch.Generator().manual_seed(1), dtype=torch.float64) + 0.5
    l2 = 0.02
    pos_weight = None if class_weight is None else class_weight[1]
    obj = _objective(X, y, l2=l2, pos_weight=pos_weight, weight=sw)
    theta, report = N.newton(obj, torch.zeros(5, dtype=torch.float64), tol=1e-12, max_iter=20)
    assert report.converged
    # our objective: sum(w_i l_i) / n + l2/2 |w|^2  <=>  sklearn's C = 1 / (l2 n)
    ref = sklearn.LogisticRegression(C=1 / (l2 * 800), tol=1e-13, max_iter=10_000,
                                     class_weight=class_weight)
    ref.fit(X.numpy(), y.numpy(), sample_weight=sw.numpy())
    np.testing.assert_allclose(theta[:4].numpy(), ref.coef_[0], rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(theta[4].item(), ref.intercept_[0], rtol=1e-6, atol=1e-8)


def test_fp32_below_its_floor_stalls_with_the_gradient_reached() -> None:
    X, y = _problem(n=3000, d=8, dtype=torch.float32)
    obj = _objective(X, y)
    theta, report = N.newton(obj, torch.zeros(9), tol=1e-14, max_iter=50)
    assert not report.converged and report.reason == "stalled"
    assert report.n_iter < 50 and 0 < report.grad_max < 1e-4
    assert bool(torch.isfinite(theta).all())


def test_max_iter_is_the_budget() -> None:
    X, y = _problem()
    _, report = N.newton(_objective(X, y), torch.zeros(6, dtype=torch.float64), tol=1e-14,
                         max_iter=2)
    assert report.n_iter == 2 and report.reason == "max_iter" and not report.converged


def _grad_max_by_torch(X, y, theta, l2):
    """max|grad| of the mean BCE + l2/2 ||w||^2 at ``theta``, by torch's own loss and autograd."""
    t = theta.detach().clone().requires_grad_(True)
    z = X @ t[:-1] + t[-1]
    f = torch.nn.functional.binary_cross_entropy_with_logits(z, y) + 0.5 * l2 * t[:-1].pow(2).sum()
    (g,) = torch.autograd.grad(f, t)
    return float(g.abs().max())


@pytest.mark.parametrize("max_iter", [1, 50])
def test_newton_says_converged_only_where_max_abs_grad_is_within_tol(max_iter) -> None:
    # All features positive and a start that predicts class 0 everywhere: every gradient
    # component is negative and large, so a rule on the signed maximum (g.max() <= tol) would
    # stop at once and call it converged. The rule is on max|grad|, recomputed here.
    X, y = _problem(n=500, d=4, seed=3)
    X = X.abs() + 0.1
    obj = _objective(X, y, l2=0.01)
    start = torch.tensor([0.0, 0.0, 0.0, 0.0, -20.0], dtype=torch.float64)
    assert _grad_max_by_torch(X, y, start, 0.01) > 0.1
    tol = 1e-9
    theta, report = N.newton(obj, start, tol=tol, max_iter=max_iter)
    recomputed = _grad_max_by_torch(X, y, theta, 0.01)
    assert report.grad_max == pytest.approx(recomputed, rel=1e-6, abs=1e-14)
    assert report.converged == (recomputed <= tol)
    if max_iter == 1:  # one step from so far cannot reach 1e-9
        assert not report.converged and report.reason == "max_iter" and report.n_iter == 1
    else:
        assert report.converged and report.reason == "tol" and report.n_iter > 1


@pytest.mark.parametrize("l2,l1", [(0.3, 0.0), (0.3, 0.05), (0.0, 0.05), (0.0, 0.0)])
@pytest.mark.parametrize("model_name", ["logistic", "mlp"])
def test_closed_form_penalty_hessian_is_the_autodiffs(model_name, l2, l1) -> None:
    # newton_objective gives Newton the penalty's Hessian in closed form (no P backward calls):
    # value, gradient, Hessian and Hessian-vector products equal those of autodiff.
    import dataclasses

    from logreg_torch.fullbatch import Rows, newton_objective
    from logreg_torch.model import MLP
    from logreg_torch.objective import Objective
    from logreg_torch.runtime import resolve_runtime

    X, y = _problem(n=300, d=4)
    torch.manual_seed(0)
    model = (LogisticRegression(4) if model_name == "logistic" else MLP(4, hidden=(3,))).double()
    objective = Objective(from_logits=True, pos_weight=None, label_smoothing=0.0, l2=l2, l1=l1,
                          check_range=False)
    closed = newton_objective(model, objective, Rows(X, y, None, len(X)),
                              resolve_runtime("cpu", "fp64"))
    assert closed.penalty_hessian is not None
    autodiff = dataclasses.replace(closed, penalty_hessian=None)
    theta = N.flat_params(model) + 0.1  # no weight at 0, where l1 has no derivative
    v = torch.linspace(-1, 1, len(theta), dtype=torch.float64)
    for order in (0, 1, 2):
        got, want = N._penalty_terms(closed, theta, order), N._penalty_terms(autodiff, theta, order)
        for a, b in zip(got, want, strict=True):
            assert (a is None) == (b is None)
            if a is not None:
                torch.testing.assert_close(a, b, rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(N.evaluate(closed, theta)[2], N.evaluate(autodiff, theta)[2],
                               rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(N.hvp(closed, theta, v), N.hvp(autodiff, theta, v),
                               rtol=1e-13, atol=1e-15)
