"""Time to scikit-learn's optimum on one synthetic problem (standardized, C = 1): each solver
gets the fewest iterations that end within 1e-6 of the optimum's objective, then the runs are
timed interleaved. Sections 3 and 3b of scripts/benchmark.py, and
``scripts/bench_solvers.py --single``; the panel (bench_solvers.py) shares its helpers.

- ``bench_sklearn`` (section 3): our full-batch L-BFGS epoch, fp32 and fp64, against
  ``LogisticRegression(C=1.0, tol=1e-6)`` and its objective;
- ``bench`` (3b): our lbfgs and newton as a run solves (fullbatch.solve_epoch) against
  scikit-learn's lbfgs and newton-cholesky, to f*, idle and beside one competing CPU-bound
  process.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch

from logreg_torch.config import load_config
from logreg_torch.data import make_classification
from logreg_torch.fullbatch import Rows, SolveState, solve_epoch
from logreg_torch.loop import train_one_epoch
from logreg_torch.model import LogisticRegression
from logreg_torch.objective import make_objective
from logreg_torch.runtime import resolve_runtime
from logreg_torch.solvers import make_optimizer

REL_TOL = 1e-6
Fit = Callable[[], tuple[np.ndarray, float]]  # a solve from zeros: (weights, bias)


def objective64(X64: np.ndarray, y64: np.ndarray, w: np.ndarray, b: float, C: float) -> float:
    """scikit-learn's L2 objective divided by C*n: mean log loss + ||w||^2 / (2 C n), float64."""
    z = X64 @ w + b
    return float(np.mean(np.logaddexp(0.0, z) - y64 * z) + (w @ w) / (2 * C * len(y64)))


def timed(fns: dict[str, Callable[[], object]], repeat: int,
          settle: float = 0.3) -> dict[str, list[float]]:
    """Seconds of each function over ``repeat`` interleaved rounds. Each round starts one
    function later (A B C, B C A, ...), so that every function follows every other equally
    often. ``settle`` seconds of sleep before each call let the previous call's thread pools
    go idle: scikit-learn's OpenMP threads spin after a fit and would slow whatever torch
    code runs next (by ~0.1 s here)."""
    names = list(fns)
    out: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeat):
        for name in names[r % len(names):] + names[:r % len(names)]:
            time.sleep(settle)
            start = time.perf_counter()
            fns[name]()
            out[name].append(time.perf_counter() - start)
    return out


def busy_process() -> subprocess.Popen:
    """One competing CPU-bound process: a Python busy loop (one core)."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def fewest_iterations(gap_after: Callable[[int], float], rel_tol: float,
                      k_max: int) -> tuple[int, float, bool]:
    """Smallest max_iter whose run ends within ``rel_tol`` (doubling, then bisection); where
    even ``k_max`` does not get there, the smallest that ends within 10% of what ``k_max``
    reaches. Returns (iterations, relative gap reached, whether rel_tol was reached)."""
    gaps: dict[int, float] = {}

    def gap(k: int) -> float:
        if k not in gaps:
            gaps[k] = gap_after(k)
        return gaps[k]

    hi = 1
    while hi < k_max and gap(hi) > rel_tol:
        hi *= 2
    hi = min(hi, k_max)
    reached = gap(hi) <= rel_tol
    goal = rel_tol if reached else gap(hi) + 0.1 * abs(gap(hi))
    lo = 0  # lo fails (or is 0), hi succeeds
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if gap(mid) <= goal else (mid, hi)
    return hi, gap(hi), reached


def solve_as_fit(X: torch.Tensor, y: torch.Tensor, solver: str, l2: float, max_iter: int,
                 overrides: list[str]) -> Fit:
    """A full-batch solve from zeros as fit runs it (fullbatch.solve_epoch), configured by
    ``overrides``; the config and objective are built here, outside what is timed."""
    precision = "fp64" if X.dtype == torch.float64 else "fp32"
    cfg = load_config(None, ["train.device=cpu", f"train.precision={precision}",
                             f"optim.name={solver}", f"optim.max_iter={max_iter}",
                             "train.batch_size=null", f"loss.l2={l2!r}", "train.epochs=1",
                             *overrides])
    runtime = resolve_runtime("cpu", precision)
    objective = make_objective(cfg, y, runtime.device, runtime.dtype)
    rows = Rows(X, y, None, len(X))

    def run() -> tuple[np.ndarray, float]:
        model = LogisticRegression(X.shape[1]).to(runtime.dtype)
        optimizer = make_optimizer(cfg, model)
        solve_epoch(model, optimizer, objective, rows, runtime, cfg.optim, SolveState(),
                    max_iter)
        return _weights(model)

    return run


def _weights(model: LogisticRegression) -> tuple[np.ndarray, float]:
    return (model.linear.weight.detach().double().numpy()[0],
            float(model.linear.bias.detach()))


def sklearn_fit(X64: np.ndarray, y64: np.ndarray, solver: str, C: float, tol: float,
                max_iter: int, quiet: bool = True) -> Fit:
    """scikit-learn's fit; ``quiet``: its ConvergenceWarning silenced (the gap to f* says it)."""
    from sklearn.linear_model import LogisticRegression as Sk

    def run() -> tuple[np.ndarray, float]:
        with warnings.catch_warnings():
            if quiet:
                warnings.simplefilter("ignore")
            m = Sk(C=C, solver=solver, tol=tol, max_iter=max_iter).fit(X64, y64)
        return m.coef_[0], float(m.intercept_[0])

    return run


def problem(n: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    """The synthetic problem, standardized, float64."""
    from sklearn.preprocessing import StandardScaler

    X_raw, y_raw = make_classification(n, d, n_informative=10, class_sep=1.0, weights=None,
                                       seed=0)
    return StandardScaler().fit_transform(X_raw), y_raw.astype(np.float64)


def column_major(X64: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    return torch.tensor(X64, dtype=dtype).t().contiguous().t()  # as fit stores it


# ----------------------------------------------------------------------------- section 3


def lbfgs_epoch(X: torch.Tensor, y: torch.Tensor, precision: str, l2: float,
                max_iter: int) -> Fit:
    """A fit by our full-batch L-BFGS (strong Wolfe, fast path): one epoch of ``max_iter``
    iterations from zeros. The tolerances are tiny, so that max_iter alone says when it stops."""
    cfg = load_config(None, ["train.device=cpu", f"train.precision={precision}",
                             "optim.name=lbfgs", "optim.lr=1.0", f"optim.max_iter={max_iter}",
                             "optim.tol=1e-12", "train.batch_size=null", f"loss.l2={l2!r}"])
    runtime = resolve_runtime("cpu", precision)
    objective = make_objective(cfg, y, runtime.device, runtime.dtype)
    assert objective.fused

    def run() -> tuple[np.ndarray, float]:
        model = LogisticRegression(X.shape[1]).to(runtime.dtype)
        optimizer = make_optimizer(cfg, model)
        train_one_epoch(model, optimizer, objective, X, y, batch_size=None, epoch_seed=0,
                        runtime=runtime)
        return _weights(model)

    return run


def bench_sklearn(n: int, d: int, repeat: int, k_max: int, C: float = 1.0,
                  rel_tol: float = REL_TOL) -> dict[str, tuple[float, float, bool]]:
    """Our L-BFGS epoch (fp32, fp64) with the fewest iterations that reach scikit-learn's
    default fit's objective within ``rel_tol``, timed against that fit: precision or
    "sklearn" -> (median seconds, relative gap, whether rel_tol was reached)."""
    X64, y64 = problem(n, d)
    fit_sklearn = sklearn_fit(X64, y64, "lbfgs", C, 1e-6, 100)  # LogisticRegression(tol=1e-6)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        w, b = sklearn_fit(X64, y64, "lbfgs", C, 1e-6, 100, quiet=False)()
    f_sk = objective64(X64, y64, w, b, C)
    print(f"  sklearn: objective {f_sk:.12g}"
          + (f" ({len(caught)} warnings: {caught[0].message})" if caught else ""))
    fns: dict[str, Callable[[], object]] = {"sklearn": fit_sklearn}
    found = {}
    for precision, dtype in (("fp32", torch.float32), ("fp64", torch.float64)):
        X, y = column_major(X64, dtype), torch.tensor(y64, dtype=dtype)

        def gap_after(k: int, X=X, y=y, precision=precision) -> float:
            fit = lbfgs_epoch(X, y, precision, 1 / (C * n), k)
            return (objective64(X64, y64, *fit(), C) - f_sk) / f_sk

        k, gap, reached = fewest_iterations(gap_after, rel_tol, k_max)
        found[precision] = (gap, reached)
        fns[precision] = lbfgs_epoch(X, y, precision, 1 / (C * n), k)
        print(f"  ours {precision}: {k} L-BFGS iterations reach relative gap {gap:+.2e} "
              + ("" if reached else f"(cannot reach {rel_tol:g} within {k_max} iterations)"))
    t = {k: statistics.median(v) for k, v in timed(fns, repeat, settle=0.5).items()}
    print(f"  sklearn fit {t['sklearn']:.3f} s; ours fp32 {t['fp32']:.3f} s, "
          f"fp64 {t['fp64']:.3f} s")
    return {"sklearn": (t["sklearn"], 0.0, True),
            **{p: (t[p], *found[p]) for p in ("fp32", "fp64")}}


# ----------------------------------------------------------------------------- section 3b


def report(title: str, times: dict[str, list[float]], budgets: dict[str, int]) -> list[str]:
    med = {n: statistics.median(t) for n, t in times.items()}
    base = min(med[n] for n in med if n.startswith("sklearn"))
    lines = [f"  {title} (median, min-max over {len(next(iter(times.values())))} runs):"]
    for name, t in times.items():
        lines.append(f"    {name:<26} {budgets[name]:>4} it  {med[name]:7.3f} s "
                     f"({min(t):.3f}-{max(t):.3f})  ratio to fastest sklearn "
                     f"{med[name] / base:5.2f}")
    return lines


def bench(n: int, d: int, repeat: int, C: float = 1.0,
          k_max: int = 1024) -> dict[str, dict[str, list[float]]]:
    """Print the comparison; return the times by machine state ("quiet", "busy")."""
    X64, y64 = problem(n, d)
    ref = sklearn_fit(X64, y64, "newton-cholesky", C, 1e-10, 100)
    f_star = objective64(X64, y64, *ref(), C)
    X32, y32 = column_major(X64, torch.float32), torch.tensor(y64, dtype=torch.float32)
    Xd, yd = column_major(X64, torch.float64), torch.tensor(y64)
    budget_only = ["optim.tol=0", "optim.fp64_finish=false"]  # the budget says when it stops
    makers: dict[str, Callable[[int], Fit]] = {
        "sklearn lbfgs": lambda k: sklearn_fit(X64, y64, "lbfgs", C, 1e-14, k),
        "sklearn newton-cholesky": lambda k: sklearn_fit(X64, y64, "newton-cholesky", C,
                                                         1e-14, k),
        "ours lbfgs fp32": lambda k: solve_as_fit(X32, y32, "lbfgs", 1 / (C * n), k,
                                                  budget_only),
        "ours newton fp32": lambda k: solve_as_fit(X32, y32, "newton", 1 / (C * n), k,
                                                   budget_only),
        "ours newton fp64": lambda k: solve_as_fit(Xd, yd, "newton", 1 / (C * n), k,
                                                   budget_only),
    }
    budgets, fns, lines = {}, {}, [f"  f* = {f_star:.12g} (n={n}, d={d}, C={C}); "
                                   f"torch threads {torch.get_num_threads()}"]
    for name, make in makers.items():
        def gap(k: int, make=make) -> float:
            return (objective64(X64, y64, *make(k)(), C) - f_star) / f_star

        budgets[name], gap_k, _ = fewest_iterations(gap, REL_TOL, k_max)
        fns[name] = make(budgets[name])
        lines.append(f"    {name}: {budgets[name]} iterations reach {gap_k:+.1e}")
    print("\n".join(lines), flush=True)
    quiet = timed(fns, repeat)
    print("\n".join(report("no competing process of ours", quiet, budgets)), flush=True)
    hog = busy_process()
    try:
        loaded = timed(fns, repeat)
    finally:
        hog.kill()
        hog.wait()
    print("\n".join(report("one competing CPU-bound process", loaded, budgets)), flush=True)
    return {"quiet": quiet, "busy": loaded}
