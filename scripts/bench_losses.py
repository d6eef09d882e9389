"""Forward+backward time of our losses against torch's native kernels, interleaved.

    python scripts/bench_losses.py            # CPU float32, 4096 to 1e7 (and CUDA if present)
    python scripts/bench_losses.py --repeat 30 --no-compile

Prints median milliseconds per forward+backward and the ratio ours/torch (lower is better).
Both run in the same process, alternating, so machine noise hits both alike. The "compiled"
rows compare torch.compile of our loss with torch.compile of torch's (inductor, default mode).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from logreg_torch.losses import binary_cross_entropy, binary_cross_entropy_with_logits

# Targets from the losses issues (2-core CPU, range checks on): ours/torch at most this.
TARGETS = {("probs", 4096): 1.2, ("logits", 4096): 1.2,
           ("probs", 65536): 1.0, ("logits", 65536): 1.0,
           ("probs", 10**6): 0.5, ("probs", 10**7): 0.5,
           ("logits", 10**6): 1.0, ("logits", 10**7): 0.9,
           ("probs", 10**6, "compiled"): 1.1, ("logits", 10**6, "compiled"): 1.1}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def bench(kind: str, n: int, device: torch.device, repeat: int,
          compiled: bool = False) -> tuple[float, float]:
    gen = torch.Generator().manual_seed(0)
    target = torch.randint(0, 2, (n,), generator=gen).float().to(device)
    if kind == "probs":
        x = torch.rand(n, generator=gen).clamp(1e-6, 1 - 1e-6).to(device).requires_grad_()
        ours, theirs = binary_cross_entropy, F.binary_cross_entropy
    else:
        x = torch.randn(n, generator=gen).to(device).requires_grad_()
        ours, theirs = binary_cross_entropy_with_logits, F.binary_cross_entropy_with_logits
    if compiled:
        ours, theirs = torch.compile(ours, fullgraph=True), torch.compile(theirs, fullgraph=True)

    def step(loss_fn):
        def run():
            loss_fn(x, target).backward()
            x.grad = None
        return run

    a, b = step(ours), step(theirs)
    for _ in range(3):  # warm-up (and compilation)
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
    parser.add_argument("--sizes", type=int, nargs="*", default=[4096, 65536, 10**6, 10**7])
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled rows")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, float32, "
          f"mean reduction, forward+backward, median of {args.repeat}")
    print(f"{'device':6} {'loss':16} {'N':>9} {'ours ms':>9} {'torch ms':>9} {'ratio':>6} target")
    rows = [(kind, n, False) for kind in ("probs", "logits") for n in args.sizes]
    if not args.no_compile:
        rows += [(kind, 10**6, True) for kind in ("probs", "logits")]
    for device in devices:
        for kind, n, compiled in rows:
            ours, theirs = bench(kind, n, device, args.repeat, compiled)
            key = (kind, n, "compiled") if compiled else (kind, n)
            target = TARGETS.get(key) if device.type == "cpu" else None
            ok = target is not None and ours / theirs <= target
            mark = "" if target is None else f"<= {target} {'ok' if ok else 'MISSED'}"
            name = f"{kind} compiled" if compiled else kind
            print(f"{device.type:6} {name:16} {n:>9.0e} {ours * 1e3:>9.3f} {theirs * 1e3:>9.3f} "
                  f"{ours / theirs:>6.2f} {mark}", flush=True)


if __name__ == "__main__":
    main()
