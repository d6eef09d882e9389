"""Start-up time of the ``logreg-torch`` commands against ``python -c "import torch"``.

    python scripts/bench_startup.py            # 15 rounds
    python scripts/bench_startup.py --rounds 25

Each round runs every command once as a fresh process, in a rotated order (A B C, B C A, ...)
so that load from other processes on the machine hits all alike; the table shows medians, the
spread (min-max) and the ratio to importing torch. Target: ``--help`` and ``config`` <= 1.15x.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET = 1.15


def _cli() -> list[str]:
    exe = shutil.which("logreg-torch", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "logreg_torch"]


def commands() -> dict[str, list[str]]:
    cli = _cli()
    return {
        "import torch": [sys.executable, "-c", "import torch"],
        "logreg-torch --help": [*cli, "--help"],
        "logreg-torch config": [*cli, "config", str(REPO / "configs" / "default.yaml")],
        "import logreg_torch.losses": [sys.executable, "-c", "import logreg_torch.losses"],
    }


def time_rounds(cmds: dict[str, list[str]], rounds: int) -> dict[str, list[float]]:
    for cmd in cmds.values():  # warm the page cache
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    names = list(cmds)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            start = time.perf_counter()
            subprocess.run(cmds[name], check=True, stdout=subprocess.DEVNULL)
            times[name].append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    times = time_rounds(commands(), args.rounds)
    base = statistics.median(times["import torch"])
    print(f"{'command':28} {'median':>8} {'min-max':>13} {'ratio':>6}  target")
    for name, ts in times.items():
        med = statistics.median(ts)
        ratio = med / base
        target = "" if name.startswith("import") else f"<= {TARGET}"
        status = "" if not target else ("ok" if ratio <= TARGET else "MISSED")
        print(f"{name:28} {med:7.3f}s {min(ts):6.3f}-{max(ts):5.3f}s {ratio:6.2f}  "
              f"{target} {status}")
    print(f"medians of {args.rounds} interleaved rounds")


if __name__ == "__main__":
    main()
