"""Coefficients with standard errors, z, p-values and confidence intervals (as statsmodels' Logit).

The covariance of the estimate is the inverse Hessian, by autodiff (logreg_torch.newton), of the
negative log-likelihood *summed* over the training rows at the optimum. The model was fitted on
standardized features; the table is on the original scale: w_orig = w / s, b_orig = b -
sum(w * m / s), and the covariance goes through the Jacobian A of that linear map,
cov_orig = A cov A^T. With an l2 penalty the Hessian includes it: the errors are those of the
penalized fit (the table says so).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from logreg_torch.newton import ChunkedObjective, _named, evaluate, flat_params

__all__ = ["CoefficientTable", "InferenceError", "coefficient_table", "summarize",
           "to_original_scale"]

# A Hessian whose smallest eigenvalue is below this fraction of its largest is singular: the
# errors would be rounding noise (statsmodels' Logit raises or prints inf there).
SINGULAR_RCOND = 1e-12
COLUMNS = ("coef", "std_err", "z", "p_value", "ci_low", "ci_high", "odds_ratio")


class InferenceError(ValueError):
    """No coefficient table can be made (a singular Hessian, a model without coefficients)."""


@dataclass
class CoefficientTable:
    names: list[str]  # "intercept" first, then the features
    coef: list[float]
    std_err: list[float]
    z: list[float]
    p_value: list[float]
    ci_low: list[float]
    ci_high: list[float]
    odds_ratio: list[float]
    n_obs: int
    log_likelihood: float
    alpha: float
    penalized: bool  # l2 > 0: errors of the penalized fit
    ending: dict = field(default_factory=dict)  # how the fit ended (message, iterations, ...)
    notes: list[str] = field(default_factory=list)

    def rows(self) -> list[dict]:
        return [{"name": name, **{c: getattr(self, c)[i] for c in COLUMNS}}
                for i, name in enumerate(self.names)]

    def to_json(self) -> str:
        facts = {k: v for k, v in asdict(self).items() if k not in ("names", *COLUMNS)}
        return json.dumps({"coefficients": self.rows(), **facts}, indent=2)

    def format(self) -> str:
        level = f"{100 * (1 - self.alpha):g}%"
        width = max(len("intercept"), *(len(n) for n in self.names)) + 2
        head = (f"{'':<{width}}{'coef':>11}{'std_err':>11}{'z':>9}{'p_value':>10}"
                f"{f'ci_low {level}':>14}{'ci_high':>11}{'odds_ratio':>12}")
        lines = [f"logistic regression on the original feature scale; n_obs {self.n_obs}, "
                 f"log-likelihood {self.log_likelihood:.6g}", head]
        for r in self.rows():
            lines.append(f"{r['name']:<{width}}{r['coef']:>11.5g}{r['std_err']:>11.4g}"
                         f"{r['z']:>9.3f}{r['p_value']:>10.3g}{r['ci_low']:>14.5g}"
                         f"{r['ci_high']:>11.5g}{r['odds_ratio']:>12.5g}")
        if self.penalized:
            lines.append("note: l2 > 0: standard errors, intervals and p-values are those of the "
                         "penalized fit (the l2 term is in the Hessian)")
        if self.ending.get("message"):
            lines.append(f"fit: {self.ending['message']}")
        lines += [f"note: {note}" for note in self.notes]
        if self.ending.get("kind") != "converged":
            lines.append("note: the fit did not report convergence to the optimum, which the "
                         "errors assume; refit with optim.name=newton (or lbfgs)")
        return "\n".join(lines)


def to_original_scale(theta: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """[w..., b] fitted on (x - mean) / std -> [b_orig, w_orig...] on x (intercept first)."""
    w, b = theta[:-1], theta[-1]
    w_orig = w / std
    return torch.cat([(b - (w * mean / std).sum()).reshape(1), w_orig])


def coefficient_table(obj: ChunkedObjective, feature_names: list[str], preprocessing: dict, *,
                      penalized: bool, alpha: float = 0.05,
                      ending: dict | None = None) -> CoefficientTable:
    """The table for a fitted logistic model; ``obj`` is its training objective (the mean loss
    plus penalty) on the training rows, which is what the model minimised."""
    if not 0.0 < alpha < 1.0:
        raise InferenceError(f"--alpha must be in (0, 1), got {alpha}")
    theta = flat_params(obj.model).double()
    if len(theta) != len(feature_names) + 1:
        raise InferenceError("a coefficient table needs a logistic model with a bias "
                             "(model.bias=true)")
    _check_identified(obj, theta, feature_names, penalized)
    value, _, hess = evaluate(obj, theta, order=2)
    hess_sum = hess * obj.n_total  # of the summed negative log-likelihood (+ penalty)
    _check_hessian(hess_sum, feature_names)
    cov = torch.linalg.inv(hess_sum)
    cov = (cov + cov.t()) / 2
    mean = torch.tensor(preprocessing.get("mean", [0.0] * len(feature_names)), dtype=theta.dtype)
    std = torch.tensor(preprocessing.get("std", [1.0] * len(feature_names)), dtype=theta.dtype)
    if not preprocessing.get("standardize", False):
        mean, std = torch.zeros_like(mean), torch.ones_like(std)
    coef = to_original_scale(theta, mean, std)
    A = torch.autograd.functional.jacobian(lambda t: to_original_scale(t, mean, std), theta)
    se = torch.diagonal(A @ cov @ A.t()).sqrt()
    z = coef / se
    p = torch.special.erfc(z.abs() / math.sqrt(2))  # two-sided normal tail
    q = float(torch.special.ndtri(torch.tensor(1 - alpha / 2, dtype=torch.float64)))
    penalty = float(obj.penalty(_named(obj.model, theta)))
    loglik = -(float(value) - penalty) * obj.n_total
    return CoefficientTable(
        names=["intercept", *feature_names], coef=coef.tolist(), std_err=se.tolist(),
        z=z.tolist(), p_value=p.tolist(), ci_low=(coef - q * se).tolist(),
        ci_high=(coef + q * se).tolist(), odds_ratio=coef.exp().tolist(), n_obs=obj.n_total,
        log_likelihood=loglik, alpha=alpha, penalized=penalized, ending=dict(ending or {}))


def resolve_checkpoint(path: str | Path) -> Path:
    """A run folder means its best.pt, else its last.pt; a file is itself."""
    path = Path(path)
    if not path.is_dir():
        return path
    for name in ("best.pt", "last.pt"):
        if (path / name).is_file():
            return path / name
    raise InferenceError(f"{path} holds no best.pt or last.pt; pass a run folder or a checkpoint")


def summarize(run: str | Path, alpha: float = 0.05) -> CoefficientTable:
    """The coefficient table of a logistic checkpoint, on its training rows (read again as
    the run's config says, in float64)."""
    from logreg_torch.checkpoint import load_checkpoint
    from logreg_torch.data import prepare, prepare_streaming
    from logreg_torch.fullbatch import Rows, newton_objective
    from logreg_torch.objective import make_objective
    from logreg_torch.predict import model_from_checkpoint, resolved_config_of
    from logreg_torch.runtime import Runtime

    path = resolve_checkpoint(run)
    state = load_checkpoint(path)
    name = state["model_args"]["name"]
    if name != "logistic":
        raise InferenceError(f"{path} holds an {name} model: a coefficient table needs "
                             f"model.name logistic (an mlp has no per-feature coefficients)")
    cfg = resolved_config_of(state)
    if cfg.loss.l1:
        raise InferenceError(f"{path} was fitted with loss.l1 = {cfg.loss.l1}: |w| has no "
                             f"second derivative at 0, so there are no standard errors")
    dtype = torch.float64
    model = model_from_checkpoint(state).to(dtype)
    if cfg.data.streaming:
        stream, _ = prepare_streaming(cfg.data, cfg.train.seed, dtype=dtype)
        rows = Rows(None, None, stream, stream.n_train)
        targets = torch.tensor(stream.y[stream.train], dtype=dtype)
    else:
        X, y = prepare(cfg.data, cfg.train.seed, dtype=dtype).train
        rows, targets = Rows(X, y, None, len(X)), y
    objective = make_objective(cfg, targets, torch.device("cpu"), dtype)
    objective.fused = False
    runtime = Runtime(torch.device("cpu"), dtype, None)
    obj = newton_objective(model, objective, rows, runtime)
    ending = state.get("ending") or {}
    table = coefficient_table(obj, list(state["feature_names"]), state["preprocessing"],
                              penalized=cfg.loss.l2 > 0, alpha=alpha, ending=ending)
    if ending.get("epochs") not in (None, state["epoch"]):
        table.notes.append(f"{path.name} holds epoch {state['epoch']}; the fit ended at epoch "
                           f"{ending['epochs']} (last.pt)")
    return table


def _check_identified(obj: ChunkedObjective, theta: Tensor, names: list[str],
                      penalized: bool) -> None:
    """Constant columns and perfectly separated classes, named before any Hessian is
    inverted: their coefficients are not identified (or are infinite)."""
    lo = hi = None
    z_pos, z_neg = math.inf, -math.inf  # smallest logit of a positive, largest of a negative
    with torch.no_grad():
        for X, y, _ in obj.chunks():
            X = X.double()
            lo = X.amin(0) if lo is None else torch.minimum(lo, X.amin(0))
            hi = X.amax(0) if hi is None else torch.maximum(hi, X.amax(0))
            z = X @ theta[:-1] + theta[-1]
            pos, neg = z[y > 0.5], z[y <= 0.5]
            if len(pos):
                z_pos = min(z_pos, float(pos.min()))
            if len(neg):
                z_neg = max(z_neg, float(neg.max()))
    if lo is not None:
        constant = [names[i] for i in torch.nonzero(hi - lo == 0).flatten().tolist()]
        if constant:
            raise InferenceError(
                f"constant column {constant[0]!r}: its coefficient is not identified (it "
                f"duplicates the intercept); drop it from data.features")
    if not penalized and math.isfinite(z_pos - z_neg) and z_pos > z_neg:
        k = int(theta[:-1].abs().argmax())
        raise InferenceError(
            f"perfect separation: coefficient of {names[k]!r} diverges (the fitted logits "
            f"split the classes exactly); add an l2 penalty (loss.l2 > 0) or drop the feature")


def _check_hessian(hess: Tensor, names: list[str]) -> None:
    evals, evecs = torch.linalg.eigh(hess)
    if bool(torch.isfinite(evals).all()) and evals[0] > SINGULAR_RCOND * evals[-1].abs():
        return
    null = evecs[:, 0].abs()
    labels = [*names, "intercept"]
    top = [labels[i] for i in null.argsort(descending=True)[:2].tolist()]
    raise InferenceError(
        f"singular Hessian: the coefficients of {top[0]!r} and {top[1]!r} are not separately "
        f"identified (collinear features, or classes separated along them); drop one or set "
        f"loss.l2 > 0")
