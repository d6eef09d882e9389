"""End to end, as whole processes: ``logreg-torch train`` against a plain scikit-learn script.

    python scripts/bench_e2e.py                       # 300k x 100 and 1e6 x 100, 5 rounds
    python scripts/bench_e2e.py --sizes 300000 --rounds 3 --busy
    python scripts/benchmark.py --e2e                 # the same

Both fit C=1 logistic regression on standardized float32 features from one .npy folder (made
once with scripts/make_dataset.py under --data-root): ours is full-batch L-BFGS
(``optim.tol=1e-6``), theirs ``np.load`` + ``StandardScaler`` + ``LogisticRegression(tol=1e-6)``.
Each round runs, per size, ours, theirs, one ``np.load`` of X.npy and ``import torch`` (the
last two are the baselines of the data-stage and memory targets), in a rotated order. Printed:
wall-clock medians with min-max, the ratio, peak RSS (``ru_maxrss`` of each child, from
``os.wait4`` in a small launcher process, so that no child counts the memory of the process
that started it: ``benchmark.py --e2e`` holds torch and data), where the time goes (ours:
``--timings``; theirs: the script times itself; "startup" is wall time outside those stages:
interpreter, imports before main, exit), and both models' log loss on the standardized data,
computed in float64 from the checkpoint and the coefficients (one harness for both, in a child
process). ``--busy`` runs one CPU-bound process beside it all.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from functools import partial
from pathlib import Path

import numpy as np

SCRIPTS = Path(__file__).resolve().parent
TARGETS = {300_000: 1.0, 1_000_000: 0.5}  # wall-clock ratio ours / scikit-learn

SKLEARN = """
import json, sys, time
t0 = time.perf_counter()
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
t1 = time.perf_counter()
X, y = np.load(sys.argv[1] + "/X.npy"), np.load(sys.argv[1] + "/y.npy")
scaler = StandardScaler()
X = scaler.fit_transform(X)
t2 = time.perf_counter()
model = LogisticRegression(C=1.0, tol=1e-6).fit(X, y)
t3 = time.perf_counter()
np.save(sys.argv[2], np.concatenate([model.coef_[0], model.intercept_, scaler.mean_,
                                     scaler.scale_]))
print(json.dumps({"timings": {"imports": t1 - t0, "data": t2 - t1, "train": t3 - t2,
                              "logging": time.perf_counter() - t3}}), file=sys.stderr)
"""
NP_LOAD = """
import sys, time
import numpy as np
t = time.perf_counter(); np.load(sys.argv[1] + "/X.npy"); print(time.perf_counter() - t)
"""
SPIN = "import time\nend = time.time() + 3600\nwhile time.time() < end:\n    pass\n"


def ensure_data(root: Path, n: int, d: int, scales: float = 0.0) -> Path:
    folder = root / (f"n{n}-d{d}" + (f"-s{scales:g}" if scales else ""))
    if not (folder / "X.npy").is_file() or not (folder / "y.npy").is_file():
        subprocess.run([sys.executable, str(SCRIPTS / "make_dataset.py"), str(folder),
                        "--rows", str(n), "--features", str(d), "--scales", str(scales)],
                       check=True)
    return folder


def write_config(tmp: Path, data: Path, n: int) -> Path:
    config = tmp / f"e2e-{n}.yaml"
    config.write_text(
        f"data: {{source: npy, path: {data}, val_fraction: 0.0, test_fraction: 0.0,"
        f" standardize: true}}\n"
        f"model: {{name: logistic}}\n"
        f"loss: {{l2: {1.0 / n!r}}}  # scikit-learn's C = 1\n"
        f"optim: {{name: lbfgs, lr: 1.0, max_iter: 100, tol: 1.0e-6}}\n"
        f"train: {{epochs: 5, batch_size: null, device: cpu, precision: fp32}}\n"
        f"log: {{name: e2e, histogram_every: 0}}\n")
    return config


# Starts one command and reports its wall time, exit status and peak RSS. A child's ru_maxrss
# starts at its parent's RSS when it forks (Linux carries the old memory's high-water mark
# over exec), so the commands are started by this small process, not by the benchmark (which
# holds torch and the data: every child would read as its size).
LAUNCH = """
import os, subprocess, sys, time
t = time.perf_counter()
p = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(p.pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(f"{time.perf_counter() - t} {os.waitstatus_to_exitcode(status)} {usage.ru_maxrss}")
"""


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, float, str, str]:
    """(wall seconds, peak RSS in MB, stdout, stderr) of one child process."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err, \
            tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report"
        launcher = subprocess.run([sys.executable, "-c", LAUNCH, str(report), *cmd],
                                  stdout=out, stderr=err, env=env)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
        if launcher.returncode != 0 or not report.is_file():
            raise RuntimeError(f"the launcher of {cmd[:3]} failed:\n{stderr[-2000:]}")
        wall, code, maxrss_kb = report.read_text().split()
    if int(code) != 0:
        raise RuntimeError(f"{cmd[:3]} failed ({code}):\n{stderr[-2000:]}")
    return float(wall), int(maxrss_kb) / 1024, stdout, stderr


def timings_of(stderr: str) -> dict[str, float]:
    for line in reversed(stderr.splitlines()):
        if line.startswith('{"timings"'):
            return json.loads(line)["timings"]
    raise ValueError(f"no timings line in:\n{stderr[-1000:]}")


def log_loss64(data: Path, w: np.ndarray, b: float, mean: np.ndarray,
               std: np.ndarray) -> float:
    """Mean log loss in float64 of (w, b) on X standardized with (mean, std), by chunks."""
    X, y = np.load(data / "X.npy", mmap_mode="r"), np.load(data / "y.npy").astype(np.float64)
    total = 0.0
    for s in range(0, len(X), 65536):
        z = ((np.asarray(X[s:s + 65536], np.float64) - mean) / std) @ w + b
        t = y[s:s + 65536]
        total += float(np.sum(np.logaddexp(0.0, z) - t * z))  # softplus(z) - y z
    return total / len(X)


def ours_loss(run_dir: Path, data: Path) -> float:
    import torch

    state = torch.load(run_dir / "last.pt", weights_only=True)
    pre = state["preprocessing"]
    w = state["model"]["linear.weight"].double().numpy()[0]
    return log_loss64(data, w, float(state["model"]["linear.bias"]), np.asarray(pre["mean"]),
                      np.asarray(pre["std"]))


def sklearn_loss(path: Path, data: Path, d: int) -> float:
    v = np.load(path)
    return log_loss64(data, v[:d], float(v[d]), v[d + 1:2 * d + 1], v[2 * d + 1:])


def _cli() -> list[str]:
    exe = shutil.which("logreg-torch", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "logreg_torch"]


def bench_size(tmp: Path, data: Path, n: int, d: int, rounds: int,
               env: dict[str, str]) -> dict:
    config = write_config(tmp, data, n)
    script = tmp / "sklearn_fit.py"
    script.write_text(SKLEARN)
    jobs = {
        "ours": lambda r: [*_cli(), "train", str(config), "--quiet", "--timings",
                           f"log.run_dir={tmp / f'run-{n}-{r}'}"],
        "sklearn": lambda r: [sys.executable, str(script), str(data), str(tmp / f"sk-{n}.npy")],
        "np.load": lambda r: [sys.executable, "-c", NP_LOAD, str(data)],
        "import torch": lambda r: [sys.executable, "-c", "import torch"],
    }
    res: dict[str, list] = {name: [] for name in jobs}
    names = list(jobs)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            res[name].append(run(jobs[name](r), env))
            if name == "ours" and r:
                shutil.rmtree(tmp / f"run-{n}-{r}")  # keep round 0's for the log loss
    return {"results": res, "loss": (_loss_by_evaluate(tmp / f"run-{n}-0", data, env),
                                     _loss_in_child("ours", tmp / f"run-{n}-0", data, d, env),
                                     _loss_in_child("sklearn", tmp / f"sk-{n}.npy", data, d,
                                                    env))}


def _loss_by_evaluate(run_dir: Path, data: Path, env: dict[str, str]) -> float:
    """Our log loss as a user reads it back: ``logreg-torch evaluate --data FOLDER --json``."""
    out = subprocess.run([*_cli(), "evaluate", str(run_dir / "last.pt"), "--data", str(data),
                          "--json"], check=True, capture_output=True, text=True, env=env)
    return float(json.loads(out.stdout)["log_loss"])


def _loss_in_child(kind: str, fitted: Path, data: Path, d: int, env: dict[str, str]) -> float:
    # In a child: a child's ru_maxrss starts from this process's RSS at fork, so this one
    # stays small (no torch, no X).
    out = subprocess.run([sys.executable, __file__, "--log-loss", kind, str(fitted), str(data),
                          str(d)], check=True, capture_output=True, text=True, env=env)
    return float(out.stdout)


def _med(xs: list[float]) -> str:
    return f"{statistics.median(xs):.2f} s ({min(xs):.2f}-{max(xs):.2f})"


def _stages(runs: list[tuple]) -> str:
    parsed = [(wall, timings_of(err)) for wall, _, _, err in runs]
    keys = list(parsed[0][1])
    meds = {k: statistics.median(t[k] for _, t in parsed) for k in keys}
    meds["startup"] = statistics.median(wall - sum(t.values()) for wall, t in parsed)
    return ", ".join(f"{k} {v:.2f}" for k, v in meds.items())


def report(n: int, d: int, out: dict) -> dict[str, float]:
    res = out["results"]
    wall = {k: [r[0] for r in v] for k, v in res.items()}
    rss = {k: statistics.median(r[1] for r in v) for k, v in res.items()}
    ratio = statistics.median(wall["ours"]) / statistics.median(wall["sklearn"])
    per_round = [a / b for a, b in zip(wall["ours"], wall["sklearn"], strict=True)]
    data_mb = n * d * 4 / 2**20
    np_load = statistics.median(float(r[2]) for r in res["np.load"])
    ours_data = statistics.median(timings_of(r[3])["data"] for r in res["ours"])
    loss_ours, loss_ours64, loss_sk = out["loss"]
    rel = abs(loss_ours - loss_sk) / loss_sk
    target = TARGETS.get(n)
    verdict = "" if target is None else ('ok' if ratio <= target else 'MISSED')
    status = f" (target <= {target}: {verdict})" if target else ""
    print(f"\nN={n} D={d} ({data_mb:.0f} MB of float32 features)")
    print(f"  logreg-torch train   {_med(wall['ours'])}, peak RSS {rss['ours']:.0f} MB")
    print(f"  scikit-learn script  {_med(wall['sklearn'])}, peak RSS {rss['sklearn']:.0f} MB")
    print(f"  ratio ours / sklearn {ratio:.2f}{status}; per round "
          f"{min(per_round):.2f}-{max(per_round):.2f}")
    print(f"  ours by stage (s):    {_stages(res['ours'])}")
    print(f"  sklearn by stage (s): {_stages(res['sklearn'])}")
    mem_limit = 1.5 * data_mb + rss["import torch"]
    print(f"  data stage {ours_data:.2f} s vs np.load of X {np_load:.2f} s: "
          f"{ours_data / np_load:.2f}x (target <= 3)")
    print(f"  peak RSS {rss['ours']:.0f} MB vs 1.5 x data + import torch "
          f"({rss['import torch']:.0f} MB) = {mem_limit:.0f} MB: "
          f"{(rss['ours'] - rss['import torch']) / data_mb:.2f}x data over the torch baseline")
    print(f"  log loss ours (evaluate --data --json) {loss_ours:.10f}, sklearn {loss_sk:.10f}: "
          f"relative difference {rel:.1e} (target <= 1e-5); ours recomputed in float64 "
          f"{loss_ours64:.10f} ({abs(loss_ours64 - loss_sk) / loss_sk:.1e})")
    return {"ratio": ratio, "ours": statistics.median(wall["ours"]),
            "sklearn": statistics.median(wall["sklearn"]), "rss": rss["ours"], "loss_rel": rel}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="300000,1000000")
    parser.add_argument("--features", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--data-root", type=Path, default=Path(tempfile.gettempdir())
                        / "logreg-e2e", help="where the .npy folders are made (once)")
    parser.add_argument("--scales", type=float, default=0.0,
                        help="make_dataset.py --scales: columns on scales 10**-S..10**S")
    parser.add_argument("--busy", action="store_true",
                        help="run one CPU-bound process beside every measurement")
    parser.add_argument("--log-loss", nargs=4, metavar=("KIND", "FITTED", "DATA", "D"),
                        help=argparse.SUPPRESS)  # used by the benchmark itself
    args = parser.parse_args(argv)
    if args.log_loss:
        kind, fitted, data, d = args.log_loss
        fn = ours_loss if kind == "ours" else partial(sklearn_loss, d=int(d))
        print(repr(fn(Path(fitted), Path(data))))
        return
    env = dict(os.environ)
    spinner = subprocess.Popen([sys.executable, "-c", SPIN]) if args.busy else None
    try:
        load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
        print(f"{os.cpu_count()} cores, load average {load}"
              f"{'; one competing CPU-bound process' if args.busy else ''}; medians of "
              f"{args.rounds} interleaved rounds")
        with tempfile.TemporaryDirectory(prefix="logreg-e2e-") as tmp_name:
            for n in (int(s) for s in args.sizes.split(",")):
                data = ensure_data(args.data_root, n, args.features, args.scales)
                report(n, args.features, bench_size(Path(tmp_name), data, n, args.features,
                                                    args.rounds, env))
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()


if __name__ == "__main__":
    main()
