"""One epoch of a full-batch solver (``optim.name`` lbfgs or newton): its share of the iteration
budget, in memory or streamed, distributed or not, and the float64 finish of a run that
rounding stopped above ``optim.tol``.

Why a finish: L-BFGS's line search compares objective values, and below some gradient they no
longer change in the working precision (float32: max|grad| ~1e-6; float64 on breast_cancer:
~3e-10). Newton's step needs no such comparison near the optimum, so a stalled logistic fit
takes its last steps as float64 Newton steps (one to three, typically), its sums in float64
over the float32 rows (logreg_torch.linear_terms); an mlp continues with float64 L-BFGS on a
float64 copy of the rows."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from logreg_torch.config import OptimConfig
from logreg_torch.data import Stream
from logreg_torch.linear_terms import LinearTerms
from logreg_torch.loop import full_batch_closure, my_chunks, stream_closure
from logreg_torch.model import LogisticRegression
from logreg_torch.newton import (
    ChunkedObjective,
    Iterate,
    SolveReport,
    flat_params,
    load_flat,
    newton_seeded,
)
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
    over every rank's rows plus the penalty, chunk by chunk. For the logistic model its
    derivatives are the factored ones (logreg_torch.linear_terms), summed in the model's dtype
    whatever the rows' (a float64 model over float32 rows: the float64 finish)."""
    chunks = _chunks(rows, runtime, objective.weight)

    def loss_sum(z: Tensor, y: Tensor, w: Tensor | None) -> Tensor:
        return objective.data_loss(z, y, w) * len(z)

    linear = None
    if isinstance(model, LogisticRegression):
        linear = LinearTerms(loss_sum, chunks, rows.n_global, bias=model.linear.bias is not None,
                             row_terms=objective.row_terms if objective.from_logits else None)
    return ChunkedObjective(
        model=model, loss_sum=loss_sum,
        penalty=lambda params: objective.penalty_of(list(params.values())),
        chunks=chunks, n_total=rows.n_global, reduce=_reduce(runtime), linear=linear,
        penalty_hessian=lambda params: objective.penalty_hessian_of(list(params.values())))


def _solve(model: nn.Module, optimizer, objective: Objective, rows: Rows, runtime: Runtime,
           o: OptimConfig, budget: int, on_iter, finish: bool = False,
           seed: Tensor | None = None) -> SolveReport:
    if optimizer is None:  # newton
        obj = newton_objective(model, objective, rows, runtime)
        if finish and obj.linear is not None:
            obj.linear.hessian_stride = _finish_stride(rows.n_global, len(flat_params(model)))
        if seed is not None:
            theta, report = newton_seeded(obj, flat_params(model), seed, tol=o.tol,
                                          max_iter=budget, on_iter=on_iter)
        else:
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


# The float64 finish starts where float32 stalled, next to the optimum: its Newton system from
# about this many rows (every k-th row) is close enough that each step still gains a factor of
# ~10 or more in max|grad|, while the float64 value and gradient over every row decide where
# it stops. The block products of the full system were most of the finish's time (1e6 x 100:
# ~0.3 s of float32 GEMM against ~0.1 s for a float64 pass of value and gradient).
FINISH_HESSIAN_ROWS = 65536


def _finish_stride(n: int, n_params: int) -> int:
    return max(1, n // max(FINISH_HESSIAN_ROWS, 64 * n_params))


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
        seed = _stall_gradient(model) if optimizer is not None and newton_finish else None
        report64 = _finish_in_float64(model, optimizer if not newton_finish else None,
                                      objective, rows, runtime, o, left, numbered, seed)
        state.used += report64.n_iter
        report = dataclasses.replace(report64, n_iter=state.used)
    else:
        report = dataclasses.replace(report, n_iter=state.used)
    state.report = report
    return report


def _stall_gradient(model: nn.Module) -> Tensor | None:
    """The gradient an L-BFGS stall leaves in .grad (run_lbfgs's last closure, at the final
    point): accurate there (~1e-9 off over 1e6 float32 rows) where the float32 value has become
    too noisy to go on, so Newton's first float64 step can start from it."""
    grads = [p.grad for p in model.parameters()]
    if any(g is None for g in grads):
        return None
    return torch.cat([g.reshape(-1) for g in grads]).double()


def _finish_in_float64(model: nn.Module, optimizer, objective: Objective, rows: Rows,
                       runtime: Runtime, o: OptimConfig, budget: int, on_iter,
                       seed: Tensor | None = None) -> SolveReport:
    """The rest of the solve on a float64 copy of the model. Newton (``optimizer`` None, the
    logistic model) sums in float64 over the rows as they are, float32 chunks included, so no
    float64 copy of X is made, and steps first on ``seed``, the gradient at the stall, when
    given; L-BFGS (an mlp) runs on a float64 copy of the rows."""
    model64 = copy.deepcopy(model).double()
    objective64 = dataclasses.replace(
        objective, pos_weight=None if objective.pos_weight is None
        else objective.pos_weight.double(),
        weight=None if objective.weight is None else objective.weight.double())
    optimizer64 = None
    if optimizer is not None:
        group = optimizer.param_groups[0]
        optimizer64 = torch.optim.LBFGS(model64.parameters(), lr=group["lr"],
                                        history_size=group["history_size"],
                                        line_search_fn="strong_wolfe")
        rows, runtime = (rows.as_dtype(torch.float64),
                         dataclasses.replace(runtime, dtype=torch.float64))
    report = _solve(model64, optimizer64, objective64, rows, runtime, o, budget, on_iter,
                    finish=True, seed=seed)
    with torch.no_grad():
        for p, p64 in zip(model.parameters(), model64.parameters(), strict=True):
            p.copy_(p64)
    return report
