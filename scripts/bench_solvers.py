"""Time to scikit-learn's optimum: our lbfgs and newton vs scikit-learn's lbfgs and newton-cholesky.

    python scripts/bench_solvers.py [--n 200000] [--d 100] [--repeat 5]

The optimum f* is scikit-learn's newton-cholesky objective at tol 1e-10 (C=1, standardized
synthetic data). For every solver the smallest iteration budget whose run ends within 1e-6
relative of f* is found first (doubling, then bisection); then all four run with those budgets,
interleaved (A, B, C, D, B, C, D, A, ...), and each is summarised by its median with the spread
(min-max). Then the same again with one competing CPU-bound process (a busy loop) on the machine.
Also a section of scripts/benchmark.py.
"""

from __future__ import annotations

import argparse
import os
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
from logreg_torch.model import LogisticRegression
from logreg_torch.objective import make_objective
from logreg_torch.runtime import resolve_runtime
from logreg_torch.solvers import make_optimizer

REL_TOL = 1e-6


def objective64(X64: np.ndarray, y64: np.ndarray, w: np.ndarray, b: float, C: float) -> float:
    """scikit-learn's L2 objective divided by C*n: mean log loss + ||w||^2 / (2 C n), float64."""
    z = X64 @ w + b
    return float(np.mean(np.logaddexp(0.0, z) - y64 * z) + (w @ w) / (2 * C * len(y64)))


def ours(X: torch.Tensor, y: torch.Tensor, solver: str, l2: float,
         budget: int) -> Callable[[], tuple[np.ndarray, float]]:
    """One full-batch solve from zeros as fit runs it (fullbatch.solve_epoch, fast path for
    lbfgs), ``budget`` iterations, tol 0 so that the budget alone says when it stops."""
    precision = "fp64" if X.dtype == torch.float64 else "fp32"
    cfg = load_config(None, ["train.device=cpu", f"train.precision={precision}",
                             f"optim.name={solver}", f"optim.max_iter={budget}", "optim.tol=0",
                             "optim.fp64_finish=false", "train.batch_size=null",
                             f"loss.l2={l2!r}", "train.epochs=1"])
    runtime = resolve_runtime("cpu", precision)
    objective = make_objective(cfg, y, runtime.device, runtime.dtype)
    rows = Rows(X, y, None, len(X))

    def run() -> tuple[np.ndarray, float]:
        model = LogisticRegression(X.shape[1]).to(runtime.dtype)
        optimizer = make_optimizer(cfg, model)
        solve_epoch(model, optimizer, objective, rows, runtime, cfg.optim, SolveState(), budget)
        return (model.linear.weight.detach().double().numpy()[0],
                float(model.linear.bias.detach()))

    return run


def sklearn(X64: np.ndarray, y64: np.ndarray, solver: str, C: float,
            budget: int) -> Callable[[], tuple[np.ndarray, float]]:
    from sklearn.linear_model import LogisticRegression as Sk

    def run() -> tuple[np.ndarray, float]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning: the budget is the point
            m = Sk(C=C, solver=solver, tol=1e-14, max_iter=budget).fit(X64, y64)
        return m.coef_[0], float(m.intercept_[0])

    return run


def smallest_budget(gap: Callable[[int], float], k_max: int) -> tuple[int, float]:
    """Smallest budget whose run ends within REL_TOL of f* (or k_max), and its gap."""
    seen: dict[int, float] = {}

    def g(k: int) -> float:
        if k not in seen:
            seen[k] = gap(k)
        return seen[k]

    hi = 1
    while hi < k_max and g(hi) > REL_TOL:
        hi *= 2
    hi = min(hi, k_max)
    lo = 0
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if g(mid) <= REL_TOL else (mid, hi)
    return hi, g(hi)


def timed(fns: dict[str, Callable[[], object]], repeat: int) -> dict[str, list[float]]:
    """Seconds of each function over ``repeat`` interleaved rounds (rotating order; a short
    sleep before each call lets the previous call's thread pools go idle)."""
    names = list(fns)
    out: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeat):
        for name in names[r % len(names):] + names[:r % len(names)]:
            time.sleep(0.3)
            start = time.perf_counter()
            fns[name]()
            out[name].append(time.perf_counter() - start)
    return out


def busy_process() -> subprocess.Popen:
    """One competing CPU-bound process: a Python busy loop (one core)."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def report(title: str, times: dict[str, list[float]], budgets: dict[str, int]) -> list[str]:
    med = {n: statistics.median(t) for n, t in times.items()}
    base = min(med[n] for n in med if n.startswith("sklearn"))
    lines = [f"  {title} (median, min-max over {len(next(iter(times.values())))} runs):"]
    for name, t in times.items():
        lines.append(f"    {name:<26} {budgets[name]:>4} it  {med[name]:7.3f} s "
                     f"({min(t):.3f}-{max(t):.3f})  ratio to fastest sklearn "
                     f"{med[name] / base:5.2f}")
    return lines


def bench(n: int, d: int, repeat: int, C: float = 1.0, k_max: int = 1024,
          keep: bool = False):
    """Print the comparison; return its lines, or with ``keep`` the times by machine state."""
    from sklearn.linear_model import LogisticRegression as Sk
    from sklearn.preprocessing import StandardScaler

    X_raw, y_raw = make_classification(n, d, n_informative=10, class_sep=1.0, weights=None,
                                       seed=0)
    X64 = StandardScaler().fit_transform(X_raw)
    y64 = y_raw.astype(np.float64)
    ref = Sk(C=C, solver="newton-cholesky", tol=1e-10, max_iter=100).fit(X64, y64)
    f_star = objective64(X64, y64, ref.coef_[0], float(ref.intercept_[0]), C)
    X32 = torch.tensor(X64, dtype=torch.float32).t().contiguous().t()  # as fit stores it
    y32 = torch.tensor(y64, dtype=torch.float32)
    Xd, yd = torch.tensor(X64), torch.tensor(y64)
    makers: dict[str, Callable[[int], Callable]] = {
        "sklearn lbfgs": lambda k: sklearn(X64, y64, "lbfgs", C, k),
        "sklearn newton-cholesky": lambda k: sklearn(X64, y64, "newton-cholesky", C, k),
        "ours lbfgs fp32": lambda k: ours(X32, y32, "lbfgs", 1 / (C * n), k),
        "ours newton fp32": lambda k: ours(X32, y32, "newton", 1 / (C * n), k),
        "ours newton fp64": lambda k: ours(Xd, yd, "newton", 1 / (C * n), k),
    }
    budgets, fns, lines = {}, {}, [f"  f* = {f_star:.12g} (n={n}, d={d}, C={C}); "
                                   f"torch threads {torch.get_num_threads()}"]
    for name, make in makers.items():
        def gap(k: int, make=make) -> float:
            w, b = make(k)()
            return (objective64(X64, y64, w, b, C) - f_star) / f_star

        budgets[name], reached = smallest_budget(gap, k_max)
        fns[name] = make(budgets[name])
        lines.append(f"    {name}: {budgets[name]} iterations reach {reached:+.1e}")
    print("\n".join(lines), flush=True)
    quiet = timed(fns, repeat)
    out = report("no competing process of ours", quiet, budgets)
    print("\n".join(out), flush=True)
    hog = busy_process()
    try:
        loaded = timed(fns, repeat)
    finally:
        hog.kill()
        hog.wait()
    busy = report("one competing CPU-bound process", loaded, budgets)
    print("\n".join(busy), flush=True)
    if keep:
        return {"quiet": quiet, "busy": loaded}
    return lines + out + busy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--d", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"cpus {os.cpu_count()}, load average "
          + ", ".join(f"{v:.2f}" for v in os.getloadavg()))
    bench(args.n, args.d, args.repeat)


if __name__ == "__main__":
    main()
