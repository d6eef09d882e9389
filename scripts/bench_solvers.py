"""Solvers to scikit-learn's optimum: a panel of data sets, and the single-problem comparison.

    python scripts/bench_solvers.py                 # the panel (six data sets), 3 rounds
    python scripts/bench_solvers.py --quick         # the panel on small versions, 1 round
    python scripts/bench_solvers.py --single [--n 200000] [--d 100] [--repeat 5]
    python scripts/bench_solvers.py --finish CONFIG [--rounds 3] [--old]  # the finish's cost

The panel: breast_cancer (unscaled and standardized), a near-separable set, an ill-conditioned
one (correlated columns, scales 1e-3..1e3, not standardized), a wide one (D = 1000) and a tall
one (1e6 x 100). On each, at the same C and tol (max|grad| of the mean loss + ||w||^2/(2Cn),
scikit-learn's rule and ours), six solvers run from zeros, interleaved, ``--rounds`` times:
scikit-learn's lbfgs and newton-cholesky, our lbfgs and newton in fp32 (with the float64
finish, as a run does by default) and fp64. Each row says the median time and the relative
objective gap to f* (the lowest float64 objective of newton-cholesky at tol 1e-12 and every
run); a time counts as time to the optimum when the gap is <= 1e-6. Then, unless --quick, the
whole process on each data set (a float32 .npy folder): ``logreg-torch train`` with our fastest
solver against a script that loads the same files and fits with scikit-learn's fastest
(StandardScaler first where the panel standardizes), medians of the rounds, peak RSS.

--single: the earlier comparison on one synthetic problem, where every solver gets the fewest
iterations that end within 1e-6 (doubling, then bisection), then a second pass beside one
competing CPU-bound process. Also a section of scripts/benchmark.py.
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
from pathlib import Path

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
    return _solve(X, y, solver, l2, budget, ["optim.tol=0", "optim.fp64_finish=false"])


def _solve(X: torch.Tensor, y: torch.Tensor, solver: str, l2: float, max_iter: int,
           overrides: list[str]) -> Callable[[], tuple[np.ndarray, float]]:
    """A full-batch solve from zeros as fit runs it, configured by ``overrides``."""
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


def timed(fns: dict[str, Callable[[], object]], repeat: int,
          settle: float = 0.3) -> dict[str, list[float]]:
    """Seconds of each function over ``repeat`` interleaved rounds (rotating order; a short
    sleep before each call lets the previous call's thread pools go idle)."""
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


# ----------------------------------------------------------------------------- the panel

TOL = 1e-8
# Iterations each solver may take (both sides): a solver that needs more ends "not at the
# optimum" and says so (raw scales make L-BFGS crawl: scikit-learn's takes ~9000 on unscaled
# breast_cancer at tol 1e-8)
MAX_ITER = {"full": 1000, "quick": 100}
TARGET_TRAIN, TARGET_WHOLE = 0.5, 1.0  # ours / scikit-learn's fastest, where it takes > 1 s


def _correlated(rng: np.random.Generator, n: int, d: int, rho: float) -> np.ndarray:
    """Columns with correlation rho between neighbours (an AR(1) chain across columns)."""
    X = rng.standard_normal((n, d))
    for j in range(1, d):
        X[:, j] = rho * X[:, j - 1] + np.sqrt(1 - rho ** 2) * X[:, j]
    return X


def _labels(rng: np.random.Generator, logits: np.ndarray) -> np.ndarray:
    return (rng.random(len(logits)) < 1 / (1 + np.exp(-logits))).astype(np.float64)


def panel_data(quick: bool) -> dict[str, tuple[np.ndarray, np.ndarray, bool]]:
    """name -> (features as given to the solvers' data step, 0/1 labels, standardize)."""
    from sklearn.datasets import load_breast_cancer

    rng = np.random.default_rng(0)
    X_bc, y_bc = load_breast_cancer(return_X_y=True)
    y_bc = (y_bc == 0).astype(np.float64)  # malignant = 1, as the bundled set
    n_sep, n_ill, (n_wide, d_wide), n_tall = ((2000, 2000, (1000, 100), 10_000) if quick else
                                              (50_000, 100_000, (20_000, 1000), 1_000_000))
    X_sep = rng.standard_normal((n_sep, 20))
    y_sep = _labels(rng, 12 * X_sep[:, :5].sum(1))  # logits ~ +-25: nearly separable
    scales = np.logspace(-3, 3, 40)
    Z = _correlated(rng, n_ill, 40, 0.95)
    y_ill = _labels(rng, Z[:, :10] @ rng.standard_normal(10))
    X_wide = rng.standard_normal((n_wide, d_wide))
    y_wide = _labels(rng, X_wide[:, :30] @ rng.standard_normal(30) / 3)
    X_tall = rng.standard_normal((n_tall, 100), dtype=np.float32) * np.logspace(-1, 1, 100,
                                                                               dtype=np.float32)
    w_tall = np.zeros(100)
    w_tall[:10] = rng.standard_normal(10) / np.logspace(-1, 1, 100)[:10]
    y_tall = _labels(rng, X_tall @ w_tall)
    return {"breast_cancer unscaled": (X_bc, y_bc, False),
            "breast_cancer standardized": (X_bc, y_bc, True),
            "near-separable 12x": (X_sep, y_sep, True),
            "ill-conditioned 1e-3..1e3": (Z * scales, y_ill, False),
            f"wide D={d_wide}": (X_wide, y_wide, True),
            f"tall {n_tall:.0e} x 100": (X_tall.astype(np.float64), y_tall, True)}


def _ours_at_tol(X: torch.Tensor, y: torch.Tensor, solver: str, l2: float, tol: float,
                 max_iter: int) -> Callable[[], tuple[np.ndarray, float]]:
    """One full-batch solve from zeros as fit runs it, to max|grad| <= tol (fp32 with the
    float64 finish, the default)."""
    return _solve(X, y, solver, l2, max_iter, [f"optim.tol={tol!r}"])


def _sklearn_at_tol(X64: np.ndarray, y64: np.ndarray, solver: str, C: float, tol: float,
                    max_iter: int) -> Callable[[], tuple[np.ndarray, float]]:
    from sklearn.linear_model import LogisticRegression as Sk

    def run() -> tuple[np.ndarray, float]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a ConvergenceWarning shows in the gap
            m = Sk(C=C, solver=solver, tol=tol, max_iter=max_iter).fit(X64, y64)
        return m.coef_[0], float(m.intercept_[0])

    return run


def panel_row(name: str, X_raw: np.ndarray, y64: np.ndarray, standardize: bool, rounds: int,
              max_iter: int, C: float = 1.0, tol: float = TOL) -> dict:
    """Times and gaps of the six solvers on one data set (see the module docstring)."""
    from sklearn.linear_model import LogisticRegression as Sk
    from sklearn.preprocessing import StandardScaler

    X64 = StandardScaler().fit_transform(X_raw) if standardize else np.asarray(X_raw, float)
    n = len(X64)
    l2 = 1 / (C * n)
    X32 = torch.tensor(X64, dtype=torch.float32).t().contiguous().t()  # as fit stores it
    Xd = torch.tensor(X64).t().contiguous().t()
    y32, yd = torch.tensor(y64, dtype=torch.float32), torch.tensor(y64)
    k = max_iter
    fns = {"sklearn lbfgs": _sklearn_at_tol(X64, y64, "lbfgs", C, tol, k),
           "sklearn newton-cholesky": _sklearn_at_tol(X64, y64, "newton-cholesky", C, tol, k),
           "ours lbfgs fp32": _ours_at_tol(X32, y32, "lbfgs", l2, tol, k),
           "ours lbfgs fp64": _ours_at_tol(Xd, yd, "lbfgs", l2, tol, k),
           "ours newton fp32": _ours_at_tol(X32, y32, "newton", l2, tol, k),
           "ours newton fp64": _ours_at_tol(Xd, yd, "newton", l2, tol, k)}
    results: dict[str, tuple] = {}
    wrapped = {k: (lambda k=k, f=f: results.__setitem__(k, f())) for k, f in fns.items()}
    times = timed(wrapped, rounds, settle=0.3 if rounds > 1 else 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = Sk(C=C, solver="newton-cholesky", tol=1e-12, max_iter=1000).fit(X64, y64)
    objective = {k: objective64(X64, y64, w, b, C) for k, (w, b) in results.items()}
    f_star = min(objective64(X64, y64, ref.coef_[0], float(ref.intercept_[0]), C),
                 *objective.values())
    gaps = {k: (v - f_star) / abs(f_star) for k, v in objective.items()}
    return {"name": name, "n": n, "d": X64.shape[1], "times": times, "gaps": gaps,
            "standardize": standardize, "max_iter": max_iter}


def _best(row: dict, side: str) -> tuple[str | None, float]:
    """The fastest solver of one side that reached the optimum (gap <= 1e-6)."""
    med = {k: statistics.median(t) for k, t in row["times"].items()
           if k.startswith(side) and row["gaps"][k] <= REL_TOL}
    if not med:
        return None, float("nan")
    name = min(med, key=med.get)
    return name, med[name]


def print_panel_row(row: dict) -> None:
    print(f"\n{row['name']}: n={row['n']}, d={row['d']}, C=1, tol={TOL:g}, "
          f"max_iter={row['max_iter']}")
    for k, t in row["times"].items():
        gap = row["gaps"][k]
        mark = "" if gap <= REL_TOL else "  (not at the optimum)"
        print(f"  {k:<24} {statistics.median(t):8.3f} s ({min(t):.3f}-{max(t):.3f})  "
              f"gap {gap:+.1e}{mark}")
    ours, t_ours = _best(row, "ours")
    theirs, t_sk = _best(row, "sklearn")
    ratio = t_ours / t_sk
    judged = t_sk > 1.0
    verdict = ("ok" if ratio <= TARGET_TRAIN else "MISSED") if judged else "not judged (< 1 s)"
    print(f"  best: {ours} {t_ours:.3f} s vs {theirs} {t_sk:.3f} s: {ratio:.2f}x "
          f"(target <= {TARGET_TRAIN} where scikit-learn > 1 s: {verdict})")
    row.update(best_ours=ours, best_sklearn=theirs, ratio=ratio)


SK_SCRIPT = """
import sys, numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
X, y = np.load(sys.argv[1] + "/X.npy"), np.load(sys.argv[1] + "/y.npy")
if sys.argv[3] == "1":
    X = StandardScaler().fit_transform(X)
LogisticRegression(C=1.0, solver=sys.argv[2], tol=float(sys.argv[4]),
                   max_iter=int(sys.argv[5])).fit(X, y)
"""


def whole_process(row: dict, X_raw: np.ndarray, y64: np.ndarray, rounds: int,
                  tmp: Path) -> None:
    """``logreg-torch train`` with our fastest solver vs the scikit-learn script with theirs,
    on the same float32 .npy folder: wall-clock medians, peak RSS (bench_e2e's launcher)."""
    e2e = _bench_e2e()
    folder = tmp / row["name"].replace(" ", "_").replace("=", "")
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "X.npy", np.asarray(X_raw, np.float32))
    np.save(folder / "y.npy", y64.astype(np.float32))
    solver, precision = row["best_ours"].split()[1:]
    config = folder / "ours.yaml"
    config.write_text(
        f"data: {{source: npy, path: {folder}, val_fraction: 0.0, test_fraction: 0.0,"
        f" standardize: {str(row['standardize']).lower()}}}\n"
        f"loss: {{l2: {1.0 / row['n']!r}}}\n"
        f"optim: {{name: {solver}, max_iter: {row['max_iter']}, tol: {TOL!r}}}\n"
        f"train: {{epochs: 1, batch_size: null, device: cpu, precision: {precision}}}\n"
        f"log: {{name: panel, histogram_every: 0}}\n")
    script = tmp / "sk_fit.py"
    script.write_text(SK_SCRIPT)
    sk_solver = row["best_sklearn"].split()[1]
    jobs = {"ours": lambda r: [*e2e._cli(), "train", str(config), "--quiet",
                               f"log.run_dir={folder / f'run-{r}'}"],
            "sklearn": lambda r: [sys.executable, str(script), str(folder), sk_solver,
                                  "1" if row["standardize"] else "0", repr(TOL),
                                  str(row["max_iter"])]}
    out: dict[str, list] = {k: [] for k in jobs}
    for r in range(rounds):
        for k in (list(jobs) if r % 2 == 0 else list(jobs)[::-1]):
            wall, rss, _, _ = e2e.run(jobs[k](r), dict(os.environ))
            out[k].append((wall, rss))
    med = {k: statistics.median(w for w, _ in v) for k, v in out.items()}
    rss = {k: statistics.median(m for _, m in v) for k, v in out.items()}
    ratio = med["ours"] / med["sklearn"]
    judged = statistics.median(row["times"][row["best_sklearn"]]) > 1.0
    verdict = ("ok" if ratio <= TARGET_WHOLE else "MISSED") if judged else "not judged"
    print(f"  whole process: logreg-torch train ({solver} {precision}) {med['ours']:.2f} s, "
          f"peak {rss['ours']:.0f} MB; scikit-learn ({sk_solver}) {med['sklearn']:.2f} s, "
          f"peak {rss['sklearn']:.0f} MB: {ratio:.2f}x (target <= {TARGET_WHOLE}: {verdict})")
    row.update(whole=ratio, whole_ours=med["ours"], whole_sklearn=med["sklearn"])


def _bench_e2e():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_e2e",
                                                  Path(__file__).with_name("bench_e2e.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_panel(quick: bool, rounds: int, only: str | None = None) -> list[dict]:
    """The panel; returns its rows (each with times, gaps, the best of each side, ratios)."""
    import tempfile

    rows = []
    with tempfile.TemporaryDirectory(prefix="logreg-panel-") as tmp:
        for name, (X, y, standardize) in panel_data(quick).items():
            if only and only not in name:
                continue
            row = panel_row(name, X, y, standardize, rounds,
                            MAX_ITER["quick" if quick else "full"])
            print_panel_row(row)
            if not quick and row["best_ours"] and row["best_sklearn"]:
                whole_process(row, X, y, rounds, Path(tmp))
            rows.append(row)
    return rows


# ----------------------------------------------------------------------------- the finish


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
    parser.add_argument("--quick", action="store_true", help="the panel on small data, 1 round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", help="only the panel rows whose name contains this")
    parser.add_argument("--single", action="store_true",
                        help="the single-problem comparison (--n, --d, --repeat)")
    parser.add_argument("--finish", metavar="CONFIG",
                        help="time the float64 finish against the float32 solve on CONFIG")
    parser.add_argument("--old", action="store_true",
                        help="with --finish: time the old finish too (float64 copy, autodiff)")
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--d", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    print(f"cpus {os.cpu_count()}, load average "
          + ", ".join(f"{v:.2f}" for v in os.getloadavg()), flush=True)
    if args.finish:
        finish_cost(args.finish, args.rounds, args.old)
    elif args.single:
        bench(args.n, args.d, args.repeat)
    else:
        run_panel(args.quick, 1 if args.quick else args.rounds, args.only)


if __name__ == "__main__":
    main()
