"""Forward+backward time of our losses against torch's native kernels, interleaved.

    python scripts/bench_losses.py            # CPU float32 at 1e5, 1e6, 1e7 (and CUDA if present)
    python scripts/bench_losses.py --repeat 30

Prints median milliseconds per forward+backward and the ratio ours/torch (lower is better).
Both run in the same process, alternating, so machine noise hits both alike.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from logreg_torch.losses import binary_cross_entropy, binary_cross_entropy_with_logits

# Targets from the losses issue (2-core CPU, range checks on): ours/torch at most this.
TARGETS = {("probs", 10**6): 0.5, ("probs", 10**7): 0.5,
           ("logits", 10**6): 1.0, ("logits", 10**7): 0.9}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def bench(kind: str, n: int, device: torch.device, repeat: int) -> tuple[float, float]:
    gen = torch.Generator().manual_seed(0)
    target = torch.randint(0, 2, (n,), generator=gen).float().to(device)
    if kind == "probs":
        x = torch.rand(n, generator=gen).clamp(1e-6, 1 - 1e-6).to(device).requires_grad_()
        ours, theirs = binary_cross_entropy, F.binary_cross_entropy
    else:
        x = torch.randn(n, generator=gen).to(device).requires_grad_()
        ours, theirs = binary_cross_entropy_with_logits, F.binary_cross_entropy_with_logits

    def step(loss_fn):
        def run():
            loss_fn(x, target).backward()
            x.grad = None
        return run

    a, b = step(ours), step(theirs)
    for _ in range(2):  # warm-up
        a()
        b()
    ta, tb = [], []
    for _ in range(repeat):
        ta.append(_time(a, device))
        tb.append(_time(b, device))
    return statistics.median(ta), statistics.median(tb)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--sizes", type=int, nargs="*", default=[10**5, 10**6, 10**7])
    args = parser.parse_args()
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, float32, "
          f"mean reduction, forward+backward, median of {args.repeat}")
    print(f"{'device':6} {'loss':7} {'N':>9} {'ours ms':>9} {'torch ms':>9} {'ratio':>6} target")
    for device in devices:
        for kind in ("probs", "logits"):
            for n in args.sizes:
                ours, theirs = bench(kind, n, device, args.repeat)
                target = TARGETS.get((kind, n)) if device.type == "cpu" else None
                ok = target is not None and ours / theirs <= target
                mark = "" if target is None else f"<= {target} {'ok' if ok else 'MISSED'}"
                print(f"{device.type:6} {kind:7} {n:>9.0e} {ours * 1e3:>9.3f} {theirs * 1e3:>9.3f} "
                      f"{ours / theirs:>6.2f} {mark}")


if __name__ == "__main__":
    main()
