"""Coefficient table: statsmodels parity, the map back from standardization, singular cases."""

import json

import numpy as np
import pytest
import torch

import logreg_torch.newton as N
from logreg_torch.inference import InferenceError, coefficient_table, to_original_scale
from logreg_torch.losses import binary_cross_entropy_with_logits
from logreg_torch.model import LogisticRegression

sm = pytest.importorskip("statsmodels.api")


def _data(n=600, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3)) * [1.0, 5.0, 0.2] + [0.0, 3.0, -1.0]
    p = 1 / (1 + np.exp(-(X @ [0.5, -0.2, 2.0] + 0.3)))
    return X, (rng.random(n) < p).astype(float)


def _fit(X, y, *, standardize=True, l2=0.0):
    m, s = X.mean(0), X.std(0)
    if not standardize:
        m, s = np.zeros_like(m), np.ones_like(s)
    Xs, yt = torch.tensor((X - m) / s), torch.tensor(y)
    model = LogisticRegression(X.shape[1]).double()
    obj = N.ChunkedObjective(
        model, lambda z, t, w: binary_cross_entropy_with_logits(z, t, w, reduction="sum"),
        lambda p: 0.5 * l2 * p["linear.weight"].pow(2).sum(), lambda: [(Xs, yt, None)], len(X))
    theta, report = N.newton(obj, N.flat_params(model), tol=1e-12, max_iter=30)
    N.load_flat(model, theta)
    prep = {"standardize": standardize, "mean": m.tolist(), "std": s.tolist()}
    return obj, prep, report


@pytest.mark.parametrize("standardize", [True, False])
def test_table_matches_statsmodels_logit(standardize) -> None:
    X, y = _data()
    obj, prep, _ = _fit(X, y, standardize=standardize)
    table = coefficient_table(obj, ["a", "b", "c"], prep, penalized=False)
    ref = sm.Logit(y, sm.add_constant(X)).fit(disp=0, tol=1e-12)
    np.testing.assert_allclose(table.coef, ref.params, rtol=1e-6)
    np.testing.assert_allclose(table.std_err, ref.bse, rtol=1e-4)
    np.testing.assert_allclose(table.p_value, ref.pvalues, rtol=1e-4, atol=1e-12)
    np.testing.assert_allclose(table.z, ref.tvalues, rtol=1e-4)
    ci = ref.conf_int(alpha=0.05)
    np.testing.assert_allclose(table.ci_low, ci[:, 0], rtol=1e-4)
    np.testing.assert_allclose(table.ci_high, ci[:, 1], rtol=1e-4)
    np.testing.assert_allclose(table.odds_ratio, np.exp(ref.params), rtol=1e-6)
    assert table.log_likelihood == pytest.approx(ref.llf, rel=1e-10)
    assert table.n_obs == len(X) and table.names == ["intercept", "a", "b", "c"]


def test_alpha_sets_the_interval_width() -> None:
    X, y = _data()
    obj, prep, _ = _fit(X, y)
    table = coefficient_table(obj, ["a", "b", "c"], prep, penalized=False, alpha=0.1)
    ci = sm.Logit(y, sm.add_constant(X)).fit(disp=0, tol=1e-12).conf_int(alpha=0.1)
    np.testing.assert_allclose(table.ci_low, ci[:, 0], rtol=1e-4)
    with pytest.raises(InferenceError, match="alpha"):
        coefficient_table(obj, ["a", "b", "c"], prep, penalized=False, alpha=1.5)


def test_map_back_is_the_linear_map_of_the_docs() -> None:
    theta = torch.tensor([2.0, -3.0, 0.5], dtype=torch.float64)  # w1, w2, b
    mean = torch.tensor([1.0, 4.0], dtype=torch.float64)
    std = torch.tensor([2.0, 0.5], dtype=torch.float64)
    out = to_original_scale(theta, mean, std)
    torch.testing.assert_close(out, torch.tensor([0.5 - (1.0 - 24.0), 1.0, -6.0],
                                                 dtype=torch.float64))
    x = torch.tensor([[3.0, 5.0]], dtype=torch.float64)  # same logit on both scales
    torch.testing.assert_close((x - mean) / std @ theta[:2] + theta[2], x @ out[1:] + out[0])


def test_l2_table_says_it_is_the_penalized_fit_and_has_smaller_errors() -> None:
    X, y = _data()
    obj, prep, _ = _fit(X, y)
    plain = coefficient_table(obj, ["a", "b", "c"], prep, penalized=False)
    obj, prep, _ = _fit(X, y, l2=0.05)
    pen = coefficient_table(obj, ["a", "b", "c"], prep, penalized=True)
    assert "penalized fit" in pen.format() and "penalized fit" not in plain.format()
    assert all(p < q for p, q in zip(pen.std_err[1:], plain.std_err[1:], strict=True))


def test_json_lists_the_coefficients_intercept_first() -> None:
    X, y = _data()
    obj, prep, report = _fit(X, y)
    table = coefficient_table(obj, ["a", "b", "c"], prep, penalized=False,
                              ending={"message": "converged after 6 iterations"})
    data = json.loads(table.to_json())
    assert [r["name"] for r in data["coefficients"]] == ["intercept", "a", "b", "c"]
    assert set(data["coefficients"][0]) == {"name", "coef", "std_err", "z", "p_value",
                                            "ci_low", "ci_high", "odds_ratio"}
    assert data["n_obs"] == 600 and data["ending"]["message"].startswith("converged")


def test_perfect_separation_names_the_diverging_coefficient() -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 3))
    y = (X[:, 2] > 0).astype(float)  # x3 alone splits the classes
    obj, prep, _ = _fit(X, y)
    with pytest.raises(InferenceError, match="perfect separation: coefficient of 'x3' diverges"):
        coefficient_table(obj, ["x1", "x2", "x3"], prep, penalized=False)


def test_constant_column_is_named() -> None:
    X, y = _data()
    X[:, 1] = 7.0
    obj, prep, _ = _fit(X, y, standardize=False)
    with pytest.raises(InferenceError, match="constant column 'b'"):
        coefficient_table(obj, ["a", "b", "c"], prep, penalized=False)


def test_collinear_columns_give_a_singular_hessian_naming_them() -> None:
    X, y = _data()
    X = np.column_stack([X, 2 * X[:, 0] - X[:, 2]])
    obj, prep, _ = _fit(X, y, standardize=False)
    with pytest.raises(InferenceError, match="singular Hessian") as e:
        coefficient_table(obj, ["a", "b", "c", "d"], prep, penalized=False)
    assert "'d'" in str(e.value) or "'a'" in str(e.value)
