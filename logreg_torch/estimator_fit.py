"""The estimator's fit and coefficient table, by the same code as ``logreg-torch train`` and
``logreg-torch summary``: the project's Objective, ``fullbatch.solve_epoch`` (L-BFGS or
Newton, with the float64 finish) and ``inference.coefficient_table``."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from logreg_torch.config import Config, OptimConfig
from logreg_torch.estimator_data import FitRows
from logreg_torch.fullbatch import Rows, SolveState, newton_objective, solve_epoch
from logreg_torch.model import LogisticRegression as LinearModel
from logreg_torch.newton import Iterate, SolveReport, flat_params, load_flat
from logreg_torch.objective import Objective
from logreg_torch.prox_newton import newton_l1
from logreg_torch.runtime import Runtime, threads_for
from logreg_torch.solvers import make_optimizer

if TYPE_CHECKING:
    from logreg_torch.estimator import LogisticRegression
    from logreg_torch.inference import CoefficientTable


def objective_of(est: LogisticRegression, rows: FitRows) -> Objective:
    """scikit-learn's objective divided by S: the weighted mean loss plus l2 = 1 / (C S)."""
    lam = 1.0 / (float(est.C) * rows.weight_sum)
    return Objective(from_logits=True, pos_weight=None, label_smoothing=0.0,
                     l2=lam if est.penalty == "l2" else 0.0, l1=0.0, check_range=False,
                     fused=True, weight=rows.weight)


def _model(est: LogisticRegression, d: int, rows: FitRows, start) -> LinearModel:
    model = LinearModel(d, bias=est.fit_intercept).to(device=rows.X.device, dtype=rows.X.dtype)
    if start is not None:
        coef, intercept = start
        values = [*coef, intercept] if est.fit_intercept else list(coef)
        load_flat(model, torch.tensor(values, dtype=rows.X.dtype, device=rows.X.device))
    return model


def _printer(est: LogisticRegression):
    if not est.verbose:
        return None

    def show(point: Iterate) -> None:
        print(f"iteration {point.iteration}: objective {point.loss:.10g}, "
              f"max|grad| {point.grad_max:.3e}")

    return show


def solve(est: LogisticRegression, rows: FitRows, objective: Objective,
          start) -> tuple[Tensor, SolveReport]:
    """Fit the linear model; returns ([w..., b], report); ``rows.handover`` records a
    float32 solve that rounding stopped and float64 finished."""
    with threads_for(rows.X.device, rows.X.numel()):
        return _solve(est, rows, objective, start)


def _solve(est: LogisticRegression, rows: FitRows, objective: Objective,
           start) -> tuple[Tensor, SolveReport]:
    d = rows.X.shape[1]
    model = _model(est, d, rows, start)
    runtime = Runtime(rows.X.device, rows.X.dtype, None)
    data = Rows(rows.X, rows.y, None, len(rows.X))
    if est.penalty == "l1":
        return _solve_l1(est, model, objective, data, runtime,
                         1.0 / (float(est.C) * rows.weight_sum))
    o = OptimConfig(name=est.solver, max_iter=int(est.max_iter), tol=float(est.tol))
    optimizer = make_optimizer(Config(optim=o), model)
    state = SolveState()
    report = solve_epoch(model, optimizer, objective, data, runtime, o, state,
                         budget=int(est.max_iter), on_iter=_printer(est))
    rows.handover = state.handover
    return flat_params(model), report


def _solve_l1(est: LogisticRegression, model: LinearModel, objective: Objective, data: Rows,
              runtime: Runtime, lam: float) -> tuple[Tensor, SolveReport]:
    """Proximal Newton, in float64 whatever the fit's dtype: it resolves the optimum only
    where objective values still differ (float32 stalls near max|grad| 1e-6)."""
    model = model.double()
    smooth = dataclasses.replace(objective, l2=0.0, l1=0.0, fused=False,
                                 weight=None if objective.weight is None
                                 else objective.weight.double())
    data = data.as_dtype(torch.float64)
    obj = newton_objective(model, smooth, data, dataclasses.replace(runtime,
                                                                     dtype=torch.float64))
    theta = flat_params(model)
    mask = torch.ones(len(theta), dtype=torch.bool, device=theta.device)
    if est.fit_intercept:
        mask[-1] = False  # the intercept is not penalized
    return newton_l1(obj, theta, lam, mask, tol=float(est.tol), max_iter=int(est.max_iter))


def coefficient_table_of(est: LogisticRegression, rows: FitRows,
                         alpha: float) -> CoefficientTable:
    """``logreg-torch summary``'s table for the fitted coefficients, on the fit's rows in
    float64 on the CPU (no standardization: the estimator fits the features as given)."""
    from logreg_torch.inference import coefficient_table
    from logreg_torch.runs import solver_ending

    if not est.fit_intercept:
        raise ValueError("summary() needs fit_intercept=True: the table has an intercept row")
    X = rows.X if isinstance(rows.X, Tensor) else torch.tensor(rows.X)
    d = X.shape[1]
    cpu = torch.device("cpu")
    model = LinearModel(d).double()
    load_flat(model, torch.tensor([*est.coef_.ravel(), est.intercept_[0]], dtype=torch.float64))
    objective = dataclasses.replace(
        objective_of(est, rows), fused=False,
        weight=None if rows.weight is None else rows.weight.to(cpu, torch.float64))
    data = Rows(X.to(cpu, torch.float64), rows.y.to(cpu, torch.float64), None, len(X))
    obj = newton_objective(model, objective, data, Runtime(cpu, torch.float64, None))
    names = [str(n) for n in getattr(est, "feature_names_in_", [f"x{i}" for i in range(d)])]
    precision = "fp64" if est.dtype == "float64" else "fp32"
    ending = solver_ending(est._report, float(est.tol), 1, rows.handover, precision)
    return coefficient_table(obj, names, {}, penalized=est.penalty == "l2", alpha=alpha,
                             ending=ending.as_dict())
