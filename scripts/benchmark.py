"""Training-speed benchmarks: each of our paths against its baseline, interleaved in one process.

    python scripts/benchmark.py            # full sizes (several minutes)
    python scripts/benchmark.py --quick    # smaller sizes, under a minute

Every figure is a ratio against a baseline measured in the same process, the two alternating
(A, B, A, B, ...) and each summarised by its median, so that noise from other processes on the
machine hits both alike. The comparisons:

1. full-batch epoch (forward, our loss, backward): fused fast path on column-major X vs one
   read of X (``X.sum()``); the plain autograd path for reference;
2. minibatch training: samples/s of ``train_one_epoch`` vs the textbook DataLoader loop;
3. time to scikit-learn's optimum: our full-batch L-BFGS vs ``LogisticRegression(C=1.0)``;
3b. the same for every solver (``scripts/bench_solvers.py``): our lbfgs and newton vs
   scikit-learn's lbfgs and newton-cholesky, idle and with one competing CPU-bound process;
4. the losses alone (``scripts/bench_losses.py``);
5. end to end: ``logreg-torch train`` vs a plain scikit-learn script, as whole processes.

On CUDA it also prints the full-batch epoch's throughput and the fraction of the GPU's memory
bandwidth it reaches.

On a shared machine (more runnable threads than cores), OpenMP's default busy-waiting makes
every small parallel op wait for a descheduled thread: the fused path, which runs many small
ops, then slows down several-fold. ``OMP_WAIT_POLICY=PASSIVE`` (set before Python starts) or
``--threads 1`` avoids it; the header prints the setting in force.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from logreg_torch.config import load_config
from logreg_torch.data import make_classification
from logreg_torch.loop import train_one_epoch
from logreg_torch.losses import binary_cross_entropy_with_logits
from logreg_torch.model import LogisticRegression
from logreg_torch.objective import make_objective
from logreg_torch.runtime import resolve_runtime
from logreg_torch.solvers import make_optimizer

SCRIPTS = Path(__file__).resolve().parent
CPU = torch.device("cpu")
CUDA = torch.device("cuda")
H100_SXM_GBS = 3350.0  # HBM3 peak of an H100 SXM, GB/s


@dataclass
class Row:
    """One line of the summary table; ``ratio`` is ours / baseline (for a throughput, higher is
    better)."""

    name: str
    ours: str
    baseline: str
    ratio: float
    target: str = ""  # "<= 3", ">= 10", or "" (reported only)

    @property
    def status(self) -> str:
        if not self.target:
            return ""
        op, value = self.target.split()
        ok = self.ratio <= float(value) if op == "<=" else self.ratio >= float(value)
        return "ok" if ok else "MISSED"


# ----------------------------------------------------------------------------- timing


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(fns: dict[str, Callable[[], object]], repeat: int,
                device: torch.device = CPU, warmup: int = 1,
                settle: float = 0.0) -> dict[str, float]:
    """Median seconds of each function, run in turn (A, B, A, B, ...) ``repeat`` times.

    Each round starts one function later (A B C, B C A, ...), so that every function follows
    every other equally often. ``settle`` seconds of sleep before each call let the previous
    call's thread pool go idle: scikit-learn brings its own OpenMP runtime, whose threads spin
    after a fit and would otherwise slow whatever torch code runs next (by ~0.1 s here).
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    names = list(fns)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(repeat):
        for name in names[r % len(names):] + names[:r % len(names)]:
            if settle:
                time.sleep(settle)
            _sync(device)
            start = time.perf_counter()
            fns[name]()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms"


def _rate(samples_per_s: float) -> str:
    return f"{samples_per_s:.3g}/s"


def _logistic_data(n: int, d: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian features and labels drawn from a logistic model, float32."""
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=gen)
    w = torch.randn(d, generator=gen) / d**0.5
    y = (torch.rand(n, generator=gen) < torch.sigmoid(X @ w)).float()
    return X, y


def _objective(device: torch.device, dtype: torch.dtype, y: torch.Tensor, *overrides: str):
    """Our training criterion as the default config builds it (fast path on)."""
    cfg = load_config(None, [f"train.device={device.type}", *overrides])
    return make_objective(cfg, y, device, dtype)


# ----------------------------------------------------------------------------- 1. full batch


def _full_batch_fns(X: torch.Tensor, y: torch.Tensor) -> dict[str, Callable[[], object]]:
    """One full-batch epoch on each path, and one read of X."""
    device = X.device
    Xc = X.t().contiguous().t()  # column-major, as fit stores full-batch X on the fast path
    objective = _objective(device, X.dtype, y)
    assert objective.fused
    fast_model = LogisticRegression(X.shape[1]).to(device)
    plain_model = LogisticRegression(X.shape[1]).to(device)

    def fast() -> None:
        fast_model.zero_grad(set_to_none=True)
        objective.model_loss(fast_model, Xc, y).backward()

    def plain() -> None:
        plain_model.zero_grad(set_to_none=True)
        binary_cross_entropy_with_logits(plain_model(X), y).backward()

    return {"fast": fast, "plain": plain, "read": lambda: X.sum()}


def bench_full_batch(n: int, d: int, repeat: int) -> list[Row]:
    X, y = _logistic_data(n, d)
    t = interleaved(_full_batch_fns(X, y), repeat)
    print(f"  fused {_ms(t['fast'])}, plain autograd {_ms(t['plain'])}, X.sum() {_ms(t['read'])} "
          f"({X.nbytes / t['read'] / 1e9:.1f} GB/s)")
    size = f"N={n:.0e} D={d}"
    return [
        Row(f"full-batch fused / X.sum() {size}", _ms(t["fast"]), _ms(t["read"]),
            t["fast"] / t["read"], "<= 3"),
        Row(f"full-batch plain / X.sum() {size}", _ms(t["plain"]), _ms(t["read"]),
            t["plain"] / t["read"]),
    ]


def bench_cuda(n: int, d: int, repeat: int, peak_gbs: float,
               device: torch.device = CUDA) -> list[Row]:
    """The full-batch epoch on the GPU: samples/s and the fraction of memory bandwidth."""
    X, y = (t.to(device) for t in _logistic_data(n, d))
    fns = _full_batch_fns(X, y)
    copy_dst = torch.empty_like(X)
    fns["copy"] = lambda: copy_dst.copy_(X)
    t = interleaved(fns, repeat, device, warmup=3)
    nbytes = X.numel() * X.element_size()
    copy_gbs = 2 * nbytes / t["copy"] / 1e9  # a copy reads and writes every byte
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    print(f"  {name}, N={n:.0e} D={d}: X is {nbytes / 1e9:.2f} GB")
    print(f"  device-to-device copy: {copy_gbs:.0f} GB/s (practical peak); nominal peak "
          f"{peak_gbs:.0f} GB/s (--peak-gbs)")
    for name in ("fast", "plain", "read"):
        gbs = nbytes / t[name] / 1e9  # X's bytes over the time: the bandwidth of one read
        print(f"  {name:5}: {_ms(t[name])}, {n / t[name]:.3g} samples/s, {gbs:.0f} GB/s of X = "
              f"{gbs / peak_gbs:.0%} of nominal peak, {gbs / copy_gbs:.0%} of copy bandwidth")
    size = f"N={n:.0e} D={d}"
    return [Row(f"{device.type} full-batch fused / X.sum() {size}", _ms(t["fast"]), _ms(t["read"]),
                t["fast"] / t["read"]),
            Row(f"{device.type} full-batch plain / X.sum() {size}", _ms(t["plain"]), _ms(t["read"]),
                t["plain"] / t["read"])]


# ----------------------------------------------------------------------------- 2. minibatch


def bench_minibatch(n: int, n_loader: int, d: int, repeat: int, batch_size: int = 1024) -> Row:
    X, y = _logistic_data(n, d)
    runtime = resolve_runtime("cpu", "fp32")
    objective = _objective(CPU, torch.float32, y)
    lr = 0.1

    ours_model = LogisticRegression(d)
    ours_opt = torch.optim.SGD(ours_model.parameters(), lr=lr)
    epoch = 0

    def ours() -> None:
        nonlocal epoch
        epoch += 1
        train_one_epoch(ours_model, ours_opt, objective, X, y, batch_size=batch_size,
                        epoch_seed=epoch, runtime=runtime)

    # The textbook loop: a DataLoader over a TensorDataset, shuffled, same model, SGD and loss.
    loader = DataLoader(TensorDataset(X[:n_loader], y[:n_loader]), batch_size=batch_size,
                        shuffle=True)
    base_model = LogisticRegression(d)
    base_opt = torch.optim.SGD(base_model.parameters(), lr=lr)

    def textbook() -> None:
        for xb, yb in loader:
            base_opt.zero_grad()
            binary_cross_entropy_with_logits(base_model(xb), yb).backward()
            base_opt.step()

    t = interleaved({"ours": ours, "textbook": textbook}, repeat)
    ours_rate, base_rate = n / t["ours"], n_loader / t["textbook"]
    print(f"  train_one_epoch: {t['ours']:.3f} s per epoch of {n:.0e}; DataLoader loop: "
          f"{t['textbook']:.3f} s per epoch of {n_loader:.0e}")
    return Row(f"minibatch {batch_size} samples/s (higher better)", _rate(ours_rate),
               _rate(base_rate), ours_rate / base_rate, ">= 10")


# ----------------------------------------------------------------------------- 3. sklearn


def objective64(X64: np.ndarray, y64: np.ndarray, w: np.ndarray, b: float, C: float) -> float:
    """scikit-learn's L2 objective divided by C*n: mean log loss + ||w||^2 / (2 C n), float64."""
    z = X64 @ w + b
    return float(np.mean(np.logaddexp(0.0, z) - y64 * z) + (w @ w) / (2 * C * len(y64)))


def lbfgs_run(X: torch.Tensor, y: torch.Tensor, precision: str, l2: float,
              max_iter: int) -> Callable[[], LogisticRegression]:
    """A fit by our full-batch L-BFGS (strong Wolfe, fast path): one epoch of ``max_iter``
    iterations from zeros. The tolerances are tiny, so that max_iter alone says when it stops.
    The config and objective are built here, outside what the benchmark times."""
    cfg = load_config(None, ["train.device=cpu", f"train.precision={precision}",
                             "optim.name=lbfgs", "optim.lr=1.0", f"optim.max_iter={max_iter}",
                             "optim.tol=1e-12", "train.batch_size=null", f"loss.l2={l2!r}"])
    runtime = resolve_runtime("cpu", precision)
    objective = make_objective(cfg, y, runtime.device, runtime.dtype)
    assert objective.fused

    def run() -> LogisticRegression:
        model = LogisticRegression(X.shape[1]).to(runtime.dtype)
        optimizer = make_optimizer(cfg, model)
        train_one_epoch(model, optimizer, objective, X, y, batch_size=None, epoch_seed=0,
                        runtime=runtime)
        return model

    return run


def _iterations_to_reach(gap_after: Callable[[int], float], rel_tol: float,
                         k_max: int) -> tuple[int, float, bool]:
    """Smallest max_iter whose run ends within rel_tol (doubling, then bisection).

    When even k_max does not get there, the target becomes what k_max reaches (plus 10%).
    Returns (iterations, relative gap reached, whether rel_tol was reached)."""
    gaps: dict[int, float] = {}

    def gap(k: int) -> float:
        if k not in gaps:
            gaps[k] = gap_after(k)
        return gaps[k]

    hi = 4
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


def bench_sklearn(n: int, d: int, repeat: int, k_max: int, C: float = 1.0,
                  rel_tol: float = 1e-6) -> list[Row]:
    from sklearn.linear_model import LogisticRegression as SkLogisticRegression
    from sklearn.preprocessing import StandardScaler

    X_raw, y_raw = make_classification(n, d, n_informative=10, class_sep=1.0, weights=None,
                                       seed=0)
    X64 = StandardScaler().fit_transform(X_raw)
    y64 = y_raw.astype(np.float64)
    l2 = 1.0 / (C * n)

    def fit_sklearn():
        return SkLogisticRegression(C=C, tol=1e-6).fit(X64, y64)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sk = fit_sklearn()
    f_sk = objective64(X64, y64, sk.coef_[0], float(sk.intercept_[0]), C)
    print(f"  sklearn: {sk.n_iter_[0]} iterations, objective {f_sk:.12g}"
          + (f" ({len(caught)} warnings: {caught[0].message})" if caught else ""))

    data = {}
    for precision, dtype in (("fp32", torch.float32), ("fp64", torch.float64)):
        X = torch.tensor(X64, dtype=dtype).t().contiguous().t()  # column-major, as fit stores it
        y = torch.tensor(y64, dtype=dtype)

        def gap_after(k: int, X=X, y=y, precision=precision) -> float:
            model = lbfgs_run(X, y, precision, l2, k)()
            w = model.linear.weight.detach().double().numpy()[0]
            b = float(model.linear.bias.detach())
            return (objective64(X64, y64, w, b, C) - f_sk) / f_sk

        k, gap, reached = _iterations_to_reach(gap_after, rel_tol, k_max)
        data[precision] = (X, y, k, gap, reached)
        print(f"  ours {precision}: {k} L-BFGS iterations reach relative gap {gap:+.2e} "
              + ("" if reached else f"(cannot reach {rel_tol:g} within {k_max} iterations)"))

    fns: dict[str, Callable[[], object]] = {"sklearn": fit_sklearn}
    for precision, (X, y, k, _, _) in data.items():
        fns[precision] = lbfgs_run(X, y, precision, l2, k)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = interleaved(fns, repeat, warmup=0, settle=0.5)
    print(f"  sklearn fit {t['sklearn']:.3f} s; ours fp32 {t['fp32']:.3f} s, "
          f"fp64 {t['fp64']:.3f} s")
    rows = []
    for precision, (_, _, _, gap, reached) in data.items():
        within = f"to {rel_tol:g}" if reached else f"to {gap:.1e} only"
        rows.append(Row(f"time to sklearn optimum {within} {precision}",
                        f"{t[precision]:.3f} s", f"{t['sklearn']:.3f} s",
                        t[precision] / t["sklearn"], "<= 0.5" if precision == "fp32" else ""))
    return rows


def bench_solvers(n: int, d: int, repeat: int) -> list[Row]:
    """Section 3b: prints its own table (five solvers, two machine states); adds the ratios of
    ours to the fastest scikit-learn solver to the summary."""
    spec = importlib.util.spec_from_file_location("bench_solvers", SCRIPTS / "bench_solvers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = []
    for state, times in module.bench(n, d, repeat, keep=True).items():
        med = {name: statistics.median(t) for name, t in times.items()}
        fastest = min(v for k, v in med.items() if k.startswith("sklearn"))
        for name in (k for k in med if k.startswith("ours")):
            rows.append(Row(f"{name} to sklearn optimum ({state})", f"{med[name]:.3f} s",
                            f"{fastest:.3f} s", med[name] / fastest, "<= 0.5"))
    return rows


# ----------------------------------------------------------------------------- 4. losses


def bench_loss_functions(sizes: list[int], repeat: int) -> list[Row]:
    spec = importlib.util.spec_from_file_location("bench_losses", SCRIPTS / "bench_losses.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = []
    for kind in ("probs", "logits"):
        for n in sizes:
            ours, theirs = module.bench(kind, n, CPU, repeat)
            target = module.TARGETS.get((kind, n))
            rows.append(Row(f"loss {kind} fwd+bwd / torch N={n:.0e}", _ms(ours), _ms(theirs),
                            ours / theirs, "" if target is None else f"<= {target}"))
    return rows


# ----------------------------------------------------------------------------- 5. end to end


def _bench_e2e():
    spec = importlib.util.spec_from_file_location("bench_e2e", SCRIPTS / "bench_e2e.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def bench_end_to_end(n: int, d: int, rounds: int = 2) -> Row:
    """``logreg-torch train`` vs the scikit-learn script as whole processes (bench_e2e.py)."""
    e2e = _bench_e2e()
    with tempfile.TemporaryDirectory(prefix="logreg-bench-") as tmp_name:
        data = e2e.ensure_data(Path(tmp_name) / "data", n, d)
        out = e2e.report(n, d, e2e.bench_size(Path(tmp_name), data, n, d, rounds,
                                              dict(os.environ)))
    target = e2e.TARGETS.get(n)
    return Row(f"end to end process N={n:.0e} D={d}", f"{out['ours']:.2f} s",
               f"{out['sklearn']:.2f} s", out["ratio"], "" if target is None else f"<= {target}")


# ----------------------------------------------------------------------------- main


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    import sklearn

    omp = ", ".join(f"{k}={os.environ[k]}" for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")
                    if k in os.environ) or "OMP_* unset"
    return (f"CPU {model}, {os.cpu_count()} cores, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads; {omp}), numpy {np.__version__}, scikit-learn "
            f"{sklearn.__version__}, Python {platform.python_version()}; load average {load}")


def print_table(rows: list[Row]) -> None:
    width = max(len(r.name) for r in rows)
    print(f"\n{'comparison':{width}}  {'ours':>11}  {'baseline':>11}  {'ratio':>6}  "
          f"{'target':>6}  status")
    for r in rows:
        print(f"{r.name:{width}}  {r.ours:>11}  {r.baseline:>11}  {r.ratio:>6.2f}  "
              f"{r.target:>6}  {r.status}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, under a minute")
    parser.add_argument("--peak-gbs", type=float, default=H100_SXM_GBS,
                        help="the GPU's nominal memory bandwidth, GB/s (default: H100 SXM)")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--e2e", nargs=argparse.REMAINDER, metavar="ARGS",
                        help="only the end-to-end processes (scripts/bench_e2e.py; ARGS go to it)")
    args = parser.parse_args()
    if args.e2e is not None:
        _bench_e2e().main(args.e2e)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    q = args.quick
    print(machine())
    print("float32 unless stated; ratio = ours / baseline, medians of interleaved runs"
          + (" (--quick sizes)" if q else ""))
    started = time.perf_counter()
    steps: list[tuple[str, Callable[[], Row | list[Row]]]] = [
        ("1. full-batch epoch", lambda: bench_full_batch(200_000 if q else 1_000_000, 100,
                                                         repeat=7 if q else 15)),
        ("2. minibatch training", lambda: bench_minibatch(
            100_000 if q else 1_000_000, 20_000 if q else 200_000, 100, repeat=3 if q else 5)),
        ("3. time to scikit-learn's optimum", lambda: bench_sklearn(
            20_000 if q else 200_000, 100, repeat=3, k_max=256 if q else 512)),
        ("3b. solvers to scikit-learn's optimum", lambda: bench_solvers(
            20_000 if q else 200_000, 100, repeat=3 if q else 5)),
        ("4. losses", lambda: bench_loss_functions([10**6] if q else [10**6, 10**7],
                                                   repeat=7 if q else 15)),
        ("5. end to end", lambda: bench_end_to_end(200_000 if q else 1_000_000, 100)),
    ]
    if torch.cuda.is_available():
        steps.insert(1, ("1b. full-batch epoch on CUDA", lambda: [
            row for n in ([10**6] if q else [10**6, 10**7])
            for row in bench_cuda(n, 100, repeat=10 if q else 30, peak_gbs=args.peak_gbs)]))
    rows: list[Row] = []
    for title, step in steps:
        print(f"{title}:", flush=True)
        start = time.perf_counter()
        result = step()
        rows += result if isinstance(result, list) else [result]
        print(f"  ({time.perf_counter() - start:.0f} s)", flush=True)
    print_table(rows)
    print(f"\ntotal {time.perf_counter() - started:.0f} s; load average now "
          + ", ".join(f"{v:.2f}" for v in os.getloadavg()))


if __name__ == "__main__":
    main()
