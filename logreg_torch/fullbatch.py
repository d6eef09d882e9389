"""One epoch of a full-batch solver (``optim.name`` lbfgs or newton): its share of the iteration
budget, in memory or streamed, distributed or not, and the float64 finish of a run that
rounding stopped above ``optim.tol``.

Why a finish: L-BFGS's line search compares objective values, and below some gradient they no
longer change in the working precision (float32: max|grad| ~1e-6; float64 on breast_cancer:
~3e-10). Newton's step needs no such comparison near the optimum, so a stalled logistic fit
takes its last steps as float64 Newton steps (one to three, typically); an mlp continues with
float64 L-BFGS."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from logreg_torch.config import OptimConfig
from logreg_torch.data import Stream
from logreg_torch.loop import full_batch_closure, my_chunks, stream_closure
from logreg_torch.model import LogisticRegression
from logreg_torch.newton import ChunkedObjective, Iterate, SolveReport, flat_params, load_flat
from logreg_torch.newton import newton as newton_solve
from logreg_torch.objective import Objective
from logreg_torch.runtime import Runtime
from logreg_torch.solvers import run_lbfgs


@dataclass
class Rows:
    """The training rows a solver sees: this rank's (X, y) in memory, or a stream."""

    X: Tensor | None
    y: Tensor | None
    stream: Stream | None
    n_global: int

    def as_dtype(self, dtype: torch.dtype) -> Rows:
        if self.stream is not None:
            return self  # chunks are read in the runtime's dtype
        return dataclasses.replace(self, X=self.X.to(dtype), y=self.y.to(dtype))


@dataclass
class SolveState:
    """What the epochs of one full-batch solve share: iterations used, the last report, and
    the handover of a stalled solve: (iterations, max|grad| there, what finished it)."""

    used: int = 0
    report: SolveReport | None = None
    handover: tuple[int, float, str] | None = None

    def done(self, max_iter: int) -> bool:
        r = self.report
        return r is not None and (r.converged or r.reason == "stalled" or self.used >= max_iter)


def _chunks(rows: Rows, runtime: Runtime,
            weight: Tensor | None = None) -> Callable[[], Iterator[tuple]]:
    if rows.stream is None:
        return lambda: iter([(rows.X, rows.y, weight)])
    return lambda: ((Xc, yc, None) for Xc, yc in my_chunks(rows.stream, runtime))


def _reduce(runtime: Runtime):
    if not runtime.distributed:
        return None
    import torch.distributed as dist

    return dist.all_reduce


def newton_objective(model: nn.Module, objective: Objective, rows: Rows,
                     runtime: Runtime) -> ChunkedObjective:
    """The training objective as Newton (and the coefficient table) sees it: the mean data loss
    over every rank's rows plus the penalty, chunk by chunk."""
    return ChunkedObjective(
        model=model, loss_sum=lambda z, y, w: objective.data_loss(z, y, w) * len(z),
        penalty=lambda params: objective.penalty_of(list(params.values())),
        chunks=_chunks(rows, runtime, objective.weight), n_total=rows.n_global,
        reduce=_reduce(runtime))


def _solve(model: nn.Module, optimizer, objective: Objective, rows: Rows, runtime: Runtime,
           o: OptimConfig, budget: int, on_iter) -> SolveReport:
    if optimizer is None:  # newton
        obj = newton_objective(model, objective, rows, runtime)
        theta, report = newton_solve(obj, flat_params(model), tol=o.tol, max_iter=budget,
                                     on_iter=on_iter)
        load_flat(model, theta)
        return report
    if rows.stream is not None:
        closure = stream_closure(model, optimizer, objective, rows.stream, runtime)
    else:
        closure = full_batch_closure(model, optimizer, objective, rows.X, rows.y, runtime,
                                     rows.n_global)
    return run_lbfgs(optimizer, closure, tol=o.tol, budget=budget, on_iter=on_iter)


def solve_epoch(model: nn.Module, optimizer, objective: Objective, rows: Rows, runtime: Runtime,
                o: OptimConfig, state: SolveState, budget: int,
                on_iter: Callable[[Iterate], None] | None = None) -> SolveReport:
    """Run up to ``budget`` iterations; ``on_iter`` gets iterations numbered over the whole
    run. With ``o.fp64_finish``, a stall above tol hands the rest of the whole budget
    (``o.max_iter``) to a float64 copy of model, objective and rows (Newton for the logistic
    model); the result is copied back into the model."""
    model.train()
    offset = state.used

    def numbered(point: Iterate) -> None:
        if on_iter is not None and (point.iteration > 0 or offset == 0):
            on_iter(dataclasses.replace(point, iteration=offset + point.iteration))

    report = _solve(model, optimizer, objective, rows, runtime, o, budget, numbered)
    state.used += report.n_iter
    left = o.max_iter - state.used
    newton_finish = isinstance(model, LogisticRegression)
    can_finish = newton_finish or runtime.dtype == torch.float32
    if report.reason == "stalled" and o.fp64_finish and left > 0 and can_finish:
        how = "float64 Newton step" if newton_finish else "float64 L-BFGS iteration"
        state.handover = (state.used, report.grad_max, how)
        offset = state.used
        report64 = _finish_in_float64(model, optimizer if not newton_finish else None,
                                      objective, rows, runtime, o, left, numbered)
        state.used += report64.n_iter
        report = dataclasses.replace(report64, n_iter=state.used)
    else:
        report = dataclasses.replace(report, n_iter=state.used)
    state.report = report
    return report


def _finish_in_float64(model: nn.Module, optimizer, objective: Objective, rows: Rows,
                       runtime: Runtime, o: OptimConfig, budget: int, on_iter) -> SolveReport:
    model64 = copy.deepcopy(model).double()
    objective64 = dataclasses.replace(
        objective, pos_weight=None if objective.pos_weight is None
        else objective.pos_weight.double(),
        weight=None if objective.weight is None else objective.weight.double())
    runtime64 = dataclasses.replace(runtime, dtype=torch.float64)
    optimizer64 = None
    if optimizer is not None:
        group = optimizer.param_groups[0]
        optimizer64 = torch.optim.LBFGS(model64.parameters(), lr=group["lr"],
                                        history_size=group["history_size"],
                                        line_search_fn="strong_wolfe")
    report = _solve(model64, optimizer64, objective64, rows.as_dtype(torch.float64),
                    runtime64, o, budget, on_iter)
    with torch.no_grad():
        for p, p64 in zip(model.parameters(), model64.parameters(), strict=True):
            p.copy_(p64)
    return report
