"""The fixed cost of a run: ``logreg-torch train CONFIG`` against ``python -c "import torch"``.

    python scripts/bench_run.py                    # 5 rounds, the four configs below
    python scripts/bench_run.py --rounds 7 --configs default lbfgs
    python scripts/bench_run.py --before /tmp/old  # also an older tree's logreg_torch package

Each round runs every command once as a fresh process, in a rotated order (A B C, B C A, ...)
so that load from other processes hits all alike; the table shows medians, the spread
(min-max) and the ratio to importing torch, then each config's median ``--timings`` by stage
(less sensitive to load than the whole process). Runs go into a temporary folder. Targets
(issue 24): ``default.yaml`` <= 1.8x; ``breast_cancer``, ``lbfgs``, ``mlp`` <= 2.0x; for
``default.yaml`` the train, evaluate and logging stages <= 0.5, 0.3 and 0.5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_startup import REPO, _cli  # noqa: E402

TARGETS = {"default": 1.8, "breast_cancer": 2.0, "lbfgs": 2.0, "mlp": 2.0}
STAGE_TARGETS = {"train": 0.5, "evaluate": 0.3, "logging": 0.5}  # default.yaml, seconds


def commands(configs: list[str], before: str | None) -> dict[str, tuple[list[str], dict]]:
    """name -> (command, environment). ``before``: a folder holding an older
    ``logreg_torch`` package, run by the same commands (its name first on PYTHONPATH)."""
    env = dict(os.environ)
    cmds = {"import torch": ([sys.executable, "-c", "import torch"], env)}
    for name in configs:
        cmd = [*_cli(), "train", str(REPO / "configs" / f"{name}.yaml"), "--quiet",
               "--timings"]
        cmds[name] = (cmd, env)
        if before:
            cmds[f"{name} (before)"] = (cmd, {**env, "PYTHONPATH": before})
    return cmds


def run_once(cmd: tuple[list[str], dict], cwd: str) -> tuple[float, dict[str, float]]:
    start = time.perf_counter()
    out = subprocess.run(cmd[0], cwd=cwd, env=cmd[1], check=True, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    timings = {}
    for line in out.stderr.splitlines():
        if line.startswith('{"timings"'):
            parsed = json.loads(line)
            logging = parsed.get("parts", {}).get("logging", {})  # older trees: none
            timings = {**parsed["timings"], **{f"logging.{k}": v for k, v in logging.items()}}
    return seconds, timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--configs", nargs="+", default=list(TARGETS))
    parser.add_argument("--before", help="a folder with an older logreg_torch package")
    args = parser.parse_args()
    cmds = commands(args.configs, args.before)
    names = list(cmds)
    times: dict[str, list[float]] = {name: [] for name in names}
    stages: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as cwd:
        for cmd in cmds.values():  # warm the page cache
            run_once(cmd, cwd)
        for r in range(args.rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                seconds, timings = run_once(cmds[name], cwd)
                times[name].append(seconds)
                stages[name].append(timings)
    base = statistics.median(times["import torch"])
    print(f"load average at the end: {os.getloadavg()[0]:.2f} (1 min)")
    print(f"{'command':22} {'median':>8} {'min-max':>13} {'ratio':>6}  target")
    for name, ts in times.items():
        med = statistics.median(ts)
        target = TARGETS.get(name)
        status = "" if target is None else ("ok" if med / base <= target else "MISSED")
        print(f"{name:22} {med:7.3f}s {min(ts):6.3f}-{max(ts):5.3f}s {med / base:6.2f}  "
              f"{'' if target is None else f'<= {target}'} {status}")
    print(f"medians of {args.rounds} interleaved rounds; --timings medians (s):")
    for name in [n for n in names if n != "import torch"]:
        keys = list(stages[name][0])
        med = {k: statistics.median(s.get(k, 0.0) for s in stages[name]) for k in keys}
        print(f"  {name}: " + ", ".join(f"{k} {v:.3f}" for k, v in med.items()
                                        if not k.startswith("logging.")))
        print("    logging: " + ", ".join(f"{k[8:]} {v:.3f}" for k, v in med.items()
                                         if k.startswith("logging.")))
        if name == "default":
            missed = [k for k, t in STAGE_TARGETS.items() if med.get(k, 0.0) > t]
            print(f"  default stage targets {STAGE_TARGETS}: "
                  f"{'MISSED ' + ', '.join(missed) if missed else 'ok'}")


if __name__ == "__main__":
    main()
