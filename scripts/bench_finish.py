"""The float64 finish's cost against the float32 solve it finishes (issue target: <= 0.25x).

    python scripts/bench_finish.py CONFIG [--rounds 7] [--old]
    python scripts/bench_solvers.py --finish CONFIG [...]      # the same

CONFIG is a full-batch lbfgs config that float32 stalls on, e.g. ``benchmark.py --e2e``'s
1e6 x 100 set at ``optim.tol=1e-7``. Set ``OMP_WAIT_POLICY=PASSIVE`` as ``logreg-torch`` does.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from logreg_torch.config import load_config
from logreg_torch.fullbatch import Rows, SolveState, solve_epoch
from logreg_torch.model import LogisticRegression
from logreg_torch.objective import make_objective
from logreg_torch.runtime import resolve_runtime
from logreg_torch.solvers import make_optimizer


def finish_cost(config: str, rounds: int, old: bool = False) -> dict[str, float]:
    """The float64 finish against the float32 solve it finishes, in one process: the data read
    as ``logreg-torch train CONFIG`` reads it (a full-batch lbfgs config that float32 stalls
    on), then per round the float32 L-BFGS solve to its stall (``optim.fp64_finish=false``)
    and the finish from there as a run does it (its first step on the stall's float32
    gradient), timed apart, interleaved with the finish without that seed (two float64 passes
    at least) and, with ``old``, the old finish (a float64 copy of the rows and the autodiff
    Hessian) on the same stalled model. Medians."""
    import copy

    from logreg_torch import fullbatch
    from logreg_torch.data import prepare
    from logreg_torch.newton import ChunkedObjective

    cfg = load_config(config, ["train.device=cpu", "optim.fp64_finish=false"])
    runtime = resolve_runtime("cpu", "fp32")
    X, y = prepare(cfg.data, cfg.train.seed, dtype=torch.float32, column_major=True).train
    objective = make_objective(cfg, y, runtime.device, runtime.dtype)
    rows = Rows(X, y, None, len(X))
    times: dict[str, list[float]] = {"float32 solve": [], "finish": [], "unseeded": []}
    if old:
        times["old finish"] = []
    for r in range(rounds):
        model = LogisticRegression(X.shape[1])
        state = SolveState()
        start = time.perf_counter()
        report = solve_epoch(model, make_optimizer(cfg, model), objective, rows, runtime,
                             cfg.optim, state, cfg.optim.max_iter)
        times["float32 solve"].append(time.perf_counter() - start)
        if report.reason != "stalled":
            raise SystemExit(f"float32 did not stall on {config} ({report}): nothing to finish")
        left = cfg.optim.max_iter - report.n_iter
        seed = fullbatch._stall_gradient(model)
        order = [k for k in times if k != "float32 solve"][::1 if r % 2 == 0 else -1]
        for name in order:
            stalled = copy.deepcopy(model)
            start = time.perf_counter()
            if name in ("finish", "unseeded"):
                done = fullbatch._finish_in_float64(stalled, None, objective, rows, runtime,
                                                    cfg.optim, left, None,
                                                    seed if name == "finish" else None)
            else:
                done = _old_finish(stalled, objective, rows, runtime, cfg, left, ChunkedObjective)
            times[name].append(time.perf_counter() - start)
            assert done.converged, (name, done)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{config}: n={len(X)}, d={X.shape[1]}, stalled at max|grad| {report.grad_max:.1e} "
          f"after {report.n_iter} iterations; medians of {rounds}")
    for k, v in times.items():
        print(f"  {k:<14} {med[k]:7.3f} s ({min(v):.3f}-{max(v):.3f})  "
              f"{med[k] / med['float32 solve']:.2f}x the float32 solve")
    return med


def _old_finish(model, objective, rows, runtime, cfg, budget, ChunkedObjective):
    """The finish before: Newton on a float64 copy of the rows, autodiff Hessian."""
    import dataclasses

    from logreg_torch.newton import flat_params, load_flat, newton

    model64 = model.double()
    objective64 = dataclasses.replace(objective, pos_weight=None)
    X64, y64 = rows.X.double(), rows.y.double()
    obj = ChunkedObjective(model64, lambda z, t, w: objective64.data_loss(z, t) * len(z),
                           lambda p: objective64.penalty_of(list(p.values())),
                           lambda: iter([(X64, y64, None)]), len(X64))
    theta, report = newton(obj, flat_params(model64), tol=cfg.optim.tol, max_iter=budget)
    load_flat(model64, theta)
    return report



def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="a full-batch lbfgs config that float32 stalls on")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--old", action="store_true",
                        help="time the old finish too (float64 copy, autodiff Hessian)")
    args = parser.parse_args(argv)
    print(f"cpus {os.cpu_count()}, load average "
          + ", ".join(f"{v:.2f}" for v in os.getloadavg()), flush=True)
    finish_cost(args.config, args.rounds, args.old)


if __name__ == "__main__":
    main()
