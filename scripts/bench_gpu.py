"""Training on the GPU against its floors, in one process (about a minute on an H200: epoch
section ~30 s, step ~5 s, L-BFGS ~40 s).

    python scripts/bench_gpu.py                 # all three sections
    python scripts/bench_gpu.py --only epoch    # one of: epoch, step, lbfgs

1. Full-batch epoch, value and gradient (the fused linear + loss kernel, X column-major as fit
   stores it, through ``Objective.model_loss`` as L-BFGS calls it) against one read of X
   (``X.sum()``), for D = 10, 100, 1000 and N = 1e6, 1e7, 4e7 (sizes that do not fit in memory
   are skipped), float32, plus bfloat16 X at D = 100; the torch-ops path (kernels off) beside.
2. A small-model training step: Linear(100, 1), batch 4096, Adam, with our loss and with
   torch's.
3. L-BFGS from the command line (``logreg_torch.cli.main``, in this process so that the passes
   over X can be counted) to the optimum on 1e7 x 100, float32 on the GPU: time and passes. The
   optimum is our float64 Newton on the same data from the same command (scikit-learn takes
   minutes at this size); the two are first checked to agree with scikit-learn's at 2e5 x 100.

Timings: CUDA events, the two sides interleaved, medians. A row that fails prints its error and
the rest goes on.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from logreg_torch import fast
from logreg_torch.config import load_config
from logreg_torch.loss import binary_cross_entropy_with_logits, route
from logreg_torch.model import LogisticRegression
from logreg_torch.objective import make_objective
from logreg_torch.solvers import make_optimizer

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "lbfgs.yaml"
EPOCH_TARGET = 1.3  # fused epoch / X.sum() at 1e7 x 100, float32
STEP_TARGET = 1.05  # small-model step, ours / torch's
PASS_AIM = 40


def medians(fns: list[Callable[[], object]], repeat: int, warmup: int = 2) -> list[float]:
    """Median seconds of each function, in turn (A, B, A, B, ...): CUDA events on a GPU, wall
    clock with a sync otherwise."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    times: list[list[float]] = [[] for _ in fns]
    cuda = torch.cuda.is_available()
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            if cuda:
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                times[i].append(start.elapsed_time(end) / 1e3)
            else:
                t = time.perf_counter()
                fn()
                times[i].append(time.perf_counter() - t)
    return [statistics.median(t) for t in times]


def guarded(title: str, fn: Callable[[], None]) -> None:
    try:
        fn()
    except Exception as e:  # one failing row must not hide the others
        print(f"  {title}: error: {type(e).__name__}: {e}", flush=True)
        traceback.print_exc(limit=4)
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def logistic_data(n: int, d: int, device: torch.device, dtype=torch.float32, seed: int = 0,
                  column_major: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Standard normal features and labels drawn from a logistic model, made on the device."""
    gen = torch.Generator(device=device).manual_seed(seed)
    X = (torch.randn(d, n, generator=gen, device=device, dtype=dtype).t() if column_major
         else torch.randn(n, d, generator=gen, device=device, dtype=dtype))
    w = torch.randn(d, generator=gen, device=device) / d ** 0.5
    z = (X.float() @ w) if X.dtype != torch.float32 else X @ w
    y = (torch.rand(n, generator=gen, device=device) < torch.sigmoid(z)).float()
    return X, y


# ----------------------------------------------------------------------------- 1. epoch


def epoch_row(n: int, d: int, dtype: torch.dtype, device: torch.device, repeat: int) -> None:
    X, y = logistic_data(n, d, device, dtype)
    cfg = load_config(None, [f"train.device={device.type}", "optim.name=lbfgs",
                             "train.batch_size=null"])
    objective = make_objective(cfg, y, device, torch.float32)
    model = LogisticRegression(d).to(device)

    def epoch() -> None:
        model.zero_grad(set_to_none=True)
        objective.model_loss(model, X, y).backward()

    def torch_ops() -> None:
        enabled, route.ENABLED = route.ENABLED, False
        try:
            epoch()
        finally:
            route.ENABLED = enabled

    fns = [epoch, lambda: X.sum()]
    if dtype == torch.float32:
        fns.append(torch_ops)
    t = medians(fns, repeat, warmup=1)
    gbs = X.numel() * X.element_size() / t[1] / 1e9
    ops = f", torch ops {t[2] * 1e3:.2f} ms ({t[2] / t[1]:.2f}x)" if len(t) > 2 else ""
    target = n == 10**7 and d == 100 and dtype == torch.float32
    mark = f" <= {EPOCH_TARGET} {'ok' if t[0] / t[1] <= EPOCH_TARGET else 'MISSED'}" * target
    print(f"  N={n:.0e} D={d:<4} {str(dtype)[6:]:8} fused {t[0] * 1e3:8.3f} ms, X.sum() "
          f"{t[1] * 1e3:8.3f} ms ({gbs:.0f} GB/s): {t[0] / t[1]:.2f}x{mark}{ops}", flush=True)


def section_epoch(device: torch.device, sizes: list[int], dims: list[int], repeat: int) -> None:
    print("1. full-batch epoch (value + gradient) vs one read of X, X column-major")
    free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else 8 * 2**30
    for d in dims:
        for n in sizes:
            for dtype in (torch.float32, torch.bfloat16) if d == 100 else (torch.float32,):
                need = n * d * (dtype.itemsize + 4) * 1.1  # X and the generator's float32 z
                if need > free:
                    print(f"  N={n:.0e} D={d:<4} {str(dtype)[6:]:8} skipped: X needs "
                          f"{need / 2**30:.0f} GiB, {free / 2**30:.0f} free")
                    continue
                guarded(f"N={n:.0e} D={d}", lambda n=n, d=d, dtype=dtype: epoch_row(
                    n, d, dtype, device, repeat if n * d < 10**9 else max(3, repeat // 3)))


# ----------------------------------------------------------------------------- 2. step


def section_step(device: torch.device, repeat: int) -> None:
    print("2. training step: Linear(100, 1), batch 4096, Adam (the loop's optimizer settings)")
    X, y = logistic_data(4096, 100, device, column_major=False)
    cfg = load_config(None, [f"train.device={device.type}", "optim.name=adam"])

    def stepper(loss_fn):
        torch.manual_seed(0)
        model = LogisticRegression(100).to(device)
        optimizer = make_optimizer(cfg, model)

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(X), y).backward()
            optimizer.step()
        return step

    ours, theirs = medians([stepper(binary_cross_entropy_with_logits),
                            stepper(F.binary_cross_entropy_with_logits)], repeat, warmup=20)
    ratio = ours / theirs
    print(f"  ours {ours * 1e6:.1f} us, torch's loss {theirs * 1e6:.1f} us: {ratio:.3f}x "
          f"<= {STEP_TARGET} {'ok' if ratio <= STEP_TARGET else 'MISSED'}", flush=True)


# ----------------------------------------------------------------------------- 3. lbfgs


def save_npy(folder: Path, n: int, d: int, device: torch.device, seed: int) -> np.ndarray:
    X, y = logistic_data(n, d, device, seed=seed, column_major=False)
    folder.mkdir(parents=True, exist_ok=True)
    X_host = X.cpu().numpy()
    np.save(folder / "X.npy", X_host)
    np.save(folder / "y.npy", y.cpu().numpy().astype(np.int64))
    return X_host


def cli_train(folder: Path, run_dir: Path, device: torch.device, overrides: list[str]
              ) -> tuple[dict, dict, float]:
    """``logreg-torch train`` in this process: (timings, passes over X, wall seconds)."""
    from logreg_torch.cli import main
    from logreg_torch.loss import triton_linear

    passes = {"kernel": 0, "torch ops (2 reads each)": 0}
    real_kernel, real_ops = triton_linear.forward, fast._epoch

    def kernel(*args):
        passes["kernel"] += 1
        return real_kernel(*args)

    def ops(*args):
        passes["torch ops (2 reads each)"] += 1
        return real_ops(*args)

    err = io.StringIO()
    triton_linear.forward, fast._epoch = kernel, ops
    try:
        start = time.perf_counter()
        with contextlib.redirect_stderr(err):
            rc = main(["train", str(CONFIG), "--quiet", "--timings", "data.source=npy",
                       f"data.path={folder}",
                       "data.val_fraction=0", "data.test_fraction=0", "data.standardize=false",
                       f"train.device={device.type}", "train.batch_size=null", "train.epochs=1",
                       "log.histogram_every=0", f"log.run_dir={run_dir}", *overrides])
        wall = time.perf_counter() - start
    finally:
        triton_linear.forward, fast._epoch = real_kernel, real_ops
    if rc != 0:
        raise RuntimeError(f"logreg-torch train exited {rc}: {err.getvalue()[-2000:]}")
    timings = json.loads(err.getvalue().strip().splitlines()[-1])["timings"]
    return timings, passes, wall


def objective_of(run_dir: Path, X: torch.Tensor, y: torch.Tensor, l2: float) -> float:
    """Mean log loss + l2/2 ||w||^2 of the run's last model, float64."""
    state = torch.load(run_dir / "last.pt", weights_only=True, map_location=X.device)["model"]
    w, b = state["linear.weight"][0].double(), state["linear.bias"].double()
    z = X @ w + b
    return float((F.softplus(z) - y * z).mean() + 0.5 * l2 * (w @ w))


def section_lbfgs(device: torch.device, n: int, d: int, check_n: int) -> None:
    print(f"3. L-BFGS from the command line to the optimum, {n:.0e} x {d}, float32, C=1")
    with tempfile.TemporaryDirectory(prefix="logreg-gpu-bench-") as tmp_name:
        tmp = Path(tmp_name)
        newton = ["optim.name=newton", "train.precision=fp64", "optim.tol=1e-10",
                  "optim.max_iter=30"]
        # (a) our float64 Newton is scikit-learn's optimum, at a size scikit-learn solves fast
        X_small = save_npy(tmp / "small", check_n, d, device, seed=1)
        y_small = np.load(tmp / "small" / "y.npy").astype(np.float64)
        l2 = 1.0 / check_n
        cli_train(tmp / "small", tmp / "newton-small", device, [*newton, f"loss.l2={l2!r}"])
        from sklearn.linear_model import LogisticRegression as SkLogisticRegression

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sk = SkLogisticRegression(C=1.0, tol=1e-10, max_iter=100,
                                      solver="newton-cholesky").fit(X_small, y_small)
        X64 = torch.tensor(X_small, dtype=torch.float64, device=device)
        y64 = torch.tensor(y_small, device=device)
        ours = objective_of(tmp / "newton-small", X64, y64, l2)
        w, b = (torch.tensor(v, dtype=torch.float64, device=device).reshape(-1)
                for v in (sk.coef_, sk.intercept_))
        z = X64 @ w + b
        theirs = float((F.softplus(z) - y64 * z).mean() + 0.5 * l2 * (w @ w))
        print(f"  check at {check_n:.0e} x {d}: our float64 Newton {ours:.12f}, scikit-learn "
              f"{theirs:.12f} (relative {(ours - theirs) / theirs:+.1e})", flush=True)
        del X64, y64, z
        # (b) the optimum at full size: the same command, float64 Newton
        X_host = save_npy(tmp / "big", n, d, device, seed=2)
        l2 = 1.0 / n
        timings, _, wall = cli_train(tmp / "big", tmp / "newton", device,
                                     [*newton, f"loss.l2={l2!r}"])
        X64 = torch.from_numpy(X_host).to(device, torch.float64)
        y64 = torch.from_numpy(np.load(tmp / "big" / "y.npy")).to(device, torch.float64)
        del X_host
        optimum = objective_of(tmp / "newton", X64, y64, l2)
        print(f"  float64 Newton: objective {optimum:.12f}, train stage {timings['train']:.2f} s",
              flush=True)
        # (c) float32 L-BFGS, the fast path: each evaluation is one pass over X
        timings, passes, wall = cli_train(tmp / "big", tmp / "lbfgs", device, [
            "optim.name=lbfgs", "optim.tol=1e-6", "optim.max_iter=100",
            "optim.fp64_finish=false", f"loss.l2={l2!r}"])
        reached = objective_of(tmp / "lbfgs", X64, y64, l2)
        total = passes["kernel"] + 2 * passes["torch ops (2 reads each)"]
        print(f"  float32 L-BFGS: train stage {timings['train']:.3f} s (whole command "
              f"{wall:.1f} s: {json.dumps(timings)}), {total} passes over X {passes} "
              f"(aim <= {PASS_AIM}), objective {reached:.12f}: relative gap "
              f"{(reached - optimum) / optimum:+.1e}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["epoch", "step", "lbfgs"])
    parser.add_argument("--repeat", type=int, default=6)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--sizes", type=int, nargs="*", default=[10**6, 10**7, 4 * 10**7])
    parser.add_argument("--dims", type=int, nargs="*", default=[10, 100, 1000])
    parser.add_argument("--lbfgs-n", type=int, default=10**7)
    parser.add_argument("--check-n", type=int, default=100_000)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    print(f"{name}, torch {torch.__version__}; Triton kernels "
          f"{'on' if route.available() else 'off'}; medians of {args.repeat}", flush=True)
    started = time.perf_counter()
    sections = {"epoch": lambda: section_epoch(device, args.sizes, args.dims, args.repeat),
                "step": lambda: section_step(device, 30 * args.repeat),
                "lbfgs": lambda: section_lbfgs(device, args.lbfgs_n, 100, args.check_n)}
    for name, run in sections.items():
        if args.only in (None, name):
            start = time.perf_counter()
            guarded(name, run)
            print(f"  ({name}: {time.perf_counter() - start:.0f} s)", flush=True)
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
