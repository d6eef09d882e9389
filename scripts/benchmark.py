"""Training-speed benchmarks: each of our paths against its baseline, interleaved in one process.

    python scripts/benchmark.py            # full sizes (several minutes)
    python scripts/benchmark.py --quick    # smaller sizes, under a minute
    python scripts/benchmark.py --device cuda [--quick]  # only the GPU's rows (section 1b)

Every figure is a ratio against a baseline measured in the same process, the two alternating
(A, B, A, B, ...) and each summarised by its median, so that noise from other processes on the
machine hits both alike. The comparisons:

1. full-batch epoch (forward, our loss, backward): fused fast path on column-major X vs one
   read of X (``X.sum()``); the plain autograd path for reference;
2. minibatch training: samples/s of ``train_one_epoch`` vs the textbook DataLoader loop;
3. time to scikit-learn's optimum: our full-batch L-BFGS vs ``LogisticRegression(C=1.0)``;
3b. the same for every solver (``scripts/bench_single.py``): our lbfgs and newton vs
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
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from logreg_torch.config import load_config
from logreg_torch.loop import train_one_epoch
from logreg_torch.losses import binary_cross_entropy_with_logits
from logreg_torch.model import LogisticRegression
from logreg_torch.objective import make_objective
from logreg_torch.runtime import resolve_runtime

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling scripts below
import bench_e2e  # noqa: E402
import bench_losses  # noqa: E402
import bench_single  # noqa: E402

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
    """Median seconds of each function, run in turn (A B C, B C A, ...) ``repeat`` times
    (bench_single.timed), each timed to the end of its GPU work; ``warmup`` calls first."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    _sync(device)
    synced = {name: (lambda fn=fn: (fn(), _sync(device))) for name, fn in fns.items()}
    times = bench_single.timed(synced, repeat, settle)
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


def bench_sklearn(n: int, d: int, repeat: int, k_max: int) -> list[Row]:
    """Section 3 (bench_single.bench_sklearn): our L-BFGS epoch to scikit-learn's objective."""
    t = bench_single.bench_sklearn(n, d, repeat, k_max)
    rows = []
    for precision in ("fp32", "fp64"):
        seconds, gap, reached = t[precision]
        within = f"to {bench_single.REL_TOL:g}" if reached else f"to {gap:.1e} only"
        rows.append(Row(f"time to sklearn optimum {within} {precision}", f"{seconds:.3f} s",
                        f"{t['sklearn'][0]:.3f} s", seconds / t["sklearn"][0],
                        "<= 0.5" if precision == "fp32" else ""))
    return rows


def bench_solvers(n: int, d: int, repeat: int) -> list[Row]:
    """Section 3b (bench_single.bench): prints its own table (five solvers, two machine
    states); adds the ratios of ours to the fastest scikit-learn solver to the summary."""
    rows = []
    for state, times in bench_single.bench(n, d, repeat).items():
        med = {name: statistics.median(t) for name, t in times.items()}
        fastest = min(v for k, v in med.items() if k.startswith("sklearn"))
        for name in (k for k in med if k.startswith("ours")):
            rows.append(Row(f"{name} to sklearn optimum ({state})", f"{med[name]:.3f} s",
                            f"{fastest:.3f} s", med[name] / fastest, "<= 0.5"))
    return rows


# ----------------------------------------------------------------------------- 4. losses


def bench_loss_functions(sizes: list[int], repeat: int) -> list[Row]:
    rows = []
    for kind in ("probs", "logits"):
        for n in sizes:
            ours, theirs = bench_losses.bench(kind, n, CPU, repeat)
            target = bench_losses.TARGETS.get((kind, n))
            rows.append(Row(f"loss {kind} fwd+bwd / torch N={n:.0e}", _ms(ours), _ms(theirs),
                            ours / theirs, "" if target is None else f"<= {target}"))
    return rows


# ----------------------------------------------------------------------------- 5. end to end


def bench_end_to_end(n: int, d: int, rounds: int = 2) -> Row:
    """``logreg-torch train`` vs the scikit-learn script as whole processes (bench_e2e.py)."""
    with tempfile.TemporaryDirectory(prefix="logreg-bench-") as tmp_name:
        data = bench_e2e.ensure_data(Path(tmp_name) / "data", n, d)
        sizes = bench_e2e.bench_size(Path(tmp_name), data, n, d, rounds, dict(os.environ))
        out = bench_e2e.report(n, d, sizes)
    target = bench_e2e.TARGETS.get(n)
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


def _steps(q: bool, device: str | None,
           peak_gbs: float) -> list[tuple[str, Callable[[], Row | list[Row]]]]:
    """The sections to run: the CPU ones unless ``device`` is cuda, the GPU one where there
    is a GPU unless ``device`` is cpu."""
    cpu = [
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
    gpu = [("1b. full-batch epoch on CUDA", lambda: [
        row for n in ([10**6] if q else [10**6, 10**7])
        for row in bench_cuda(n, 100, repeat=10 if q else 30, peak_gbs=peak_gbs)])]
    if device == "cuda":
        return gpu
    if device == "cpu" or not torch.cuda.is_available():
        return cpu
    return cpu[:1] + gpu + cpu[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, under a minute")
    parser.add_argument("--device", choices=("cpu", "cuda"),
                        help="only the CPU rows, or only the GPU's (default: both, where "
                             "there is a GPU)")
    parser.add_argument("--peak-gbs", type=float, default=H100_SXM_GBS,
                        help="the GPU's nominal memory bandwidth, GB/s (default: H100 SXM)")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--e2e", nargs=argparse.REMAINDER, metavar="ARGS",
                        help="only the end-to-end processes (scripts/bench_e2e.py; ARGS go to it)")
    args = parser.parse_args()
    if args.e2e is not None:
        bench_e2e.main(args.e2e)
        return
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.exit(2, "error: --device cuda, but torch sees no CUDA device here\n")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(machine())
    print("float32 unless stated; ratio = ours / baseline, medians of interleaved runs"
          + (" (--quick sizes)" if args.quick else ""))
    started = time.perf_counter()
    rows: list[Row] = []
    for title, step in _steps(args.quick, args.device, args.peak_gbs):
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
