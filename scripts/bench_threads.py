"""The fused full-batch path on a shared machine: how much it loses when another CPU-bound
process runs, against how much torch's own ops lose.

    python scripts/bench_threads.py                 # N=2e5, D=100, every variant
    python scripts/bench_threads.py --n 1000000 --variants default,passive

For each variant (environment and pool size, below) a child process times, interleaved, one
full-batch epoch (forward, loss, backward) of

* ``fused``: ``linear_bce_with_logits`` on column-major X (the training loop's fast path);
* ``torch``: torch's own ops, ``F.linear`` + ``F.binary_cross_entropy_with_logits`` + backward.

It does so twice, alone and beside one competing CPU-bound process (a Python busy loop), the
two conditions alternating. The table gives medians, ``busy / alone`` for both (the slowdown),
and ``fused / torch``. The goal: the fused slowdown is no larger than torch's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

# name -> (environment overrides, fused-pool workers or None for logreg_torch's default)
VARIANTS: dict[str, tuple[dict[str, str], int | None]] = {
    "default": ({}, None),
    "passive": ({"OMP_WAIT_POLICY": "PASSIVE"}, None),
    "active": ({"OMP_WAIT_POLICY": "ACTIVE"}, None),
    "pool1": ({}, 1),
    "pool2": ({}, 2),
    "mkl1": ({"MKL_NUM_THREADS": "1"}, None),
    "passive+pool1": ({"OMP_WAIT_POLICY": "PASSIVE"}, 1),
    "passive+mkl1": ({"OMP_WAIT_POLICY": "PASSIVE", "MKL_NUM_THREADS": "1"}, None),
}

_CHILD = r"""
import json, statistics, sys, time
import torch
import torch.nn.functional as F
from logreg_torch import fast
from logreg_torch.fast import linear_bce_with_logits

n, d, repeat, workers = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
if workers != "None":
    fast.POOL_WORKERS = int(workers)
gen = torch.Generator().manual_seed(0)
X = torch.randn(n, d, generator=gen)
y = (torch.rand(n, generator=gen) < torch.sigmoid(X[:, 0])).float()
Xc = X.t().contiguous().t()
head = torch.nn.Linear(d, 1)

def fused():
    head.zero_grad(set_to_none=True)
    linear_bce_with_logits(Xc, head, y).backward()

def plain():
    head.zero_grad(set_to_none=True)
    F.binary_cross_entropy_with_logits(head(X).squeeze(-1), y).backward()

fns = {"fused": fused, "torch": plain}
for fn in fns.values():
    fn(); fn()
times = {k: [] for k in fns}
for r in range(repeat):
    for name in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
        t = time.perf_counter(); fns[name](); times[name].append(time.perf_counter() - t)
print(json.dumps({k: statistics.median(v) for k, v in times.items()}))
"""

_SPIN = "import time\nend = time.time() + 600\nwhile time.time() < end:\n    pass\n"


def run_child(n: int, d: int, repeat: int, variant: str, busy: bool) -> dict[str, float]:
    env_over, workers = VARIANTS[variant]
    env = {**os.environ, **env_over}
    spinner = subprocess.Popen([sys.executable, "-c", _SPIN]) if busy else None
    try:
        if spinner:
            time.sleep(0.2)  # let it reach its loop
        out = subprocess.run([sys.executable, "-c", _CHILD, str(n), str(d), str(repeat),
                              str(workers)], env=env, capture_output=True, text=True,
                             check=True)
    finally:
        if spinner:
            spinner.kill()
            spinner.wait()
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--d", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=15, help="epochs timed per child")
    parser.add_argument("--rounds", type=int, default=3, help="children per variant, condition")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()
    variants = args.variants.split(",")
    results: dict[tuple[str, bool], list[dict[str, float]]] = {}
    for r in range(args.rounds):  # alternate variants and conditions, round by round
        for variant in variants:
            for busy in ((False, True) if r % 2 == 0 else (True, False)):
                results.setdefault((variant, busy), []).append(
                    run_child(args.n, args.d, args.repeat, variant, busy))
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"N={args.n} D={args.d}, {os.cpu_count()} cores, load average {load}; medians of "
          f"{args.rounds} children x {args.repeat} epochs; ms")
    print(f"{'variant':13} {'fused':>7} {'busy':>7} {'slow':>5} | {'torch':>7} {'busy':>7} "
          f"{'slow':>5} | fused/torch alone, busy")
    for variant in variants:
        med = {(busy, k): statistics.median(x[k] for x in results[(variant, busy)]) * 1e3
               for busy in (False, True) for k in ("fused", "torch")}
        f0, f1, t0, t1 = (med[(False, "fused")], med[(True, "fused")], med[(False, "torch")],
                          med[(True, "torch")])
        print(f"{variant:13} {f0:7.1f} {f1:7.1f} {f1 / f0:5.2f} | {t0:7.1f} {t1:7.1f} "
              f"{t1 / t0:5.2f} | {f0 / t0:.2f}, {f1 / t1:.2f}")


if __name__ == "__main__":
    main()
