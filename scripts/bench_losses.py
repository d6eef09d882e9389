"""Forward+backward time of our losses against torch's native kernels, interleaved.

    python scripts/bench_losses.py                  # CPU float32, 4096 to 1e7 (and CUDA if present)
    python scripts/bench_losses.py --repeat 30 --no-compile
    python scripts/bench_losses.py --device cuda    # the GPU table only (~40 s, H200)

Prints median milliseconds per forward+backward and the ratio ours/torch (lower is better).
Both run in the same process, alternating, so machine noise hits both alike. The "compiled"
rows compare torch.compile of our loss with torch.compile of torch's (inductor, default mode).

On CUDA (``--device cuda``, about 40 s on an H200): CUDA events around back-to-back calls (as
in a training loop: up to 1e7 the time is the host's work per call, at 1e8 the device's), ours
and torch's interleaved, medians; N = 4096 to 1e8, float32 and bfloat16, inputs drawn on the
device; the kernels each side launches per forward+backward at 4096 (counted by the torch
profiler); the bandwidth ours reaches counting the least traffic (read input and target, write
the gradient: 12 bytes per element in float32, 6 in bfloat16) as a fraction of a
device-to-device copy measured in the same run; compiled rows at 1e6 and 1e8 (static shapes).
A row that fails prints its error and the table goes on.
"""

from __future__ import annotations

import argparse
import statistics
import time
import traceback

import torch
import torch.nn.functional as F

from logreg_torch.loss import binary_cross_entropy, binary_cross_entropy_with_logits

# Targets from the losses issues (2-core CPU, range checks on): ours/torch at most this.
TARGETS = {("probs", 4096): 1.2, ("logits", 4096): 1.2,
           ("probs", 65536): 1.0, ("logits", 65536): 1.0,
           ("probs", 10**6): 0.5, ("probs", 10**7): 0.5,
           ("logits", 10**6): 1.0, ("logits", 10**7): 0.9,
           ("probs", 10**6, "compiled"): 1.1, ("logits", 10**6, "compiled"): 1.1}
CUDA_SIZES = [4096, 65536, 10**6, 10**7, 10**8]


def cuda_target(kind: str, n: int, compiled: bool = False) -> float | None:
    """The GPU issue's targets, ours/torch: <= 1.0 for small inputs and compiled; at 1e7 and
    beyond 0.6 (probabilities) and 0.35 (logits), float32 and bfloat16 alike."""
    if compiled:
        return 1.0
    if n >= 10**7:
        return 0.6 if kind == "probs" else 0.35
    return 1.0 if n <= 65536 else None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def _inputs(kind: str, n: int, device: torch.device, dtype: torch.dtype = torch.float32):
    gen = torch.Generator().manual_seed(0)
    target = torch.randint(0, 2, (n,), generator=gen).to(device, dtype)
    if kind == "probs":
        x = torch.rand(n, generator=gen).clamp(1e-6, 1 - 1e-6).to(device, dtype)
        ours, theirs = binary_cross_entropy, F.binary_cross_entropy
    else:
        x = torch.randn(n, generator=gen).to(device, dtype)
        ours, theirs = binary_cross_entropy_with_logits, F.binary_cross_entropy_with_logits
    return x.requires_grad_(), target, ours, theirs


def _steps(kind: str, n: int, device: torch.device, dtype: torch.dtype, compiled: bool,
           inputs=_inputs):
    """(our forward+backward, torch's), each a function of no arguments."""
    x, target, ours, theirs = inputs(kind, n, device, dtype)
    if compiled:
        ours, theirs = (torch.compile(ours, fullgraph=True, dynamic=False),
                        torch.compile(theirs, fullgraph=True, dynamic=False))

    def step(loss_fn):
        def run():
            loss_fn(x, target).backward()
            x.grad = None
        return run

    return step(ours), step(theirs)


def bench(kind: str, n: int, device: torch.device, repeat: int,
          compiled: bool = False) -> tuple[float, float]:
    """Median seconds of (ours, torch's), wall clock with a sync around each call."""
    a, b = _steps(kind, n, device, torch.float32, compiled)
    for _ in range(3):  # warm-up (and compilation)
        a()
        b()
    ta, tb = [], []
    for _ in range(repeat):
        ta.append(_time(a, device))
        tb.append(_time(b, device))
    return statistics.median(ta), statistics.median(tb)


# ----------------------------------------------------------------------------- CUDA


def device_medians(fns: list, repeat: int, device: torch.device, calls: int = 1) -> list[float]:
    """Median milliseconds per call of each function, ``calls`` back-to-back calls per sample
    (so that host and device overlap as in a training loop: a small call's time is then its
    host work, a large one's its device work), functions in turn (A, B, A, B, ...): by CUDA
    events on a GPU (a round's events read after one synchronize), else by wall clock."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        if device.type != "cuda":
            for i, fn in enumerate(fns):
                times[i].append(_time(lambda fn=fn: [fn() for _ in range(calls)], device)
                                * 1e3 / calls)
            continue
        events = []
        for fn in fns:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(calls):
                fn()
            end.record()
            events.append((start, end))
        torch.cuda.synchronize()
        for i, (start, end) in enumerate(events):
            times[i].append(start.elapsed_time(end) / calls)
    return [statistics.median(t) for t in times]


def launches(fn, device: torch.device) -> int:
    """Kernels (and memsets, copies) the device runs for one call, by the torch profiler."""
    from torch.profiler import ProfilerActivity, profile

    if device.type != "cuda":
        return 0
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)


def copy_bandwidth(repeat: int, device: torch.device, n: int = 2 * 10**8) -> float:
    """Bytes per second of a device-to-device copy (each byte read and written)."""
    src = torch.empty(n, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    (ms,) = device_medians([lambda: dst.copy_(src)], repeat, device, calls=3)
    return 2 * 4 * n / (ms / 1e3)


def _device_inputs(kind: str, n: int, device: torch.device, dtype: torch.dtype):
    """The inputs of ``_inputs``, drawn on the device (1e8 values on the CPU take seconds)."""
    gen = torch.Generator(device=device).manual_seed(0)
    target = (torch.rand(n, generator=gen, device=device) < 0.5).to(dtype)
    if kind == "probs":
        x = torch.rand(n, generator=gen, device=device).clamp(1e-6, 1 - 1e-6).to(dtype)
        return x.requires_grad_(), target, binary_cross_entropy, F.binary_cross_entropy
    x = torch.randn(n, generator=gen, device=device).to(dtype)
    return (x.requires_grad_(), target, binary_cross_entropy_with_logits,
            F.binary_cross_entropy_with_logits)


def gpu_row(kind: str, n: int, dtype: torch.dtype, repeat: int, copy_bps: float,
            device: torch.device, compiled: bool = False) -> str:
    a, b = _steps(kind, n, device, dtype, compiled, inputs=_device_inputs)
    for _ in range(3):  # warm-up: Triton and inductor compile here
        a()
        b()
    calls = max(3, min(50, 10**8 // (10 * n)))  # back-to-back calls per sample
    ours, theirs = device_medians([a, b], repeat, device, calls)
    counted = ("" if compiled or n > 4096
               else f"{launches(a, device):>3} / {launches(b, device):<3}")
    per_element = 3 * torch.finfo(dtype).bits // 8  # read input and target, write the gradient
    fraction = per_element * n / (ours / 1e3) / copy_bps
    target = cuda_target(kind, n, compiled)
    mark = "" if target is None else f"<= {target} {'ok' if ours / theirs <= target else 'MISSED'}"
    name = f"{kind} compiled" if compiled else kind
    return (f"{name:16} {str(dtype)[6:]:8} {n:>9.0e} {ours:>9.4f} {theirs:>9.4f} "
            f"{ours / theirs:>6.2f} {counted:9} {fraction:>6.0%} {mark}")


def gpu_table(sizes: list[int], repeat: int, compile_rows: bool, device: str = "cuda",
              copy_n: int = 2 * 10**8) -> None:
    device = torch.device(device)
    started = time.perf_counter()
    copy_bps = copy_bandwidth(repeat, device, copy_n)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    print(f"{name}, torch {torch.__version__}; device-to-device copy {copy_bps / 1e9:.0f} GB/s; "
          f"forward+backward, mean reduction, range checks on (our default), CUDA events "
          f"around back-to-back calls, interleaved, median of {repeat}")
    print("launches (N=4096): ours / torch's per forward+backward; of copy: ours at the least "
          "traffic (input, target, gradient) over the copy's bandwidth")
    print(f"{'loss':16} {'dtype':8} {'N':>9} {'ours ms':>9} {'torch ms':>9} {'ratio':>6} "
          f"{'launches':9} {'of copy':>6} target")
    rows = [(kind, n, dtype, False) for dtype in (torch.float32, torch.bfloat16)
            for kind in ("probs", "logits") for n in sizes]
    if compile_rows:
        rows += [(kind, n, torch.float32, True) for kind in ("probs", "logits")
                 for n in (10**6, 10**8) if n in sizes]
    for kind, n, dtype, compiled in rows:
        try:
            print(gpu_row(kind, n, dtype, repeat if n < 10**8 else max(5, repeat // 3),
                          copy_bps, device, compiled), flush=True)
        except Exception as e:  # one failing row must not hide the others
            name = f"{kind} compiled" if compiled else kind
            print(f"{name:16} {str(dtype)[6:]:8} {n:>9.0e} error: {type(e).__name__}: {e}",
                  flush=True)
            traceback.print_exc(limit=3)
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
    print(f"table: {time.perf_counter() - started:.0f} s")


# ----------------------------------------------------------------------------- CPU


def cpu_table(device: torch.device, sizes: list[int], repeat: int, compile_rows: bool) -> None:
    print(f"{'device':6} {'loss':16} {'N':>9} {'ours ms':>9} {'torch ms':>9} {'ratio':>6} target")
    rows = [(kind, n, False) for kind in ("probs", "logits") for n in sizes]
    if compile_rows:
        rows += [(kind, 10**6, True) for kind in ("probs", "logits")]
    for kind, n, compiled in rows:
        ours, theirs = bench(kind, n, device, repeat, compiled)
        key = (kind, n, "compiled") if compiled else (kind, n)
        target = TARGETS.get(key) if device.type == "cpu" else None
        ok = target is not None and ours / theirs <= target
        mark = "" if target is None else f"<= {target} {'ok' if ok else 'MISSED'}"
        name = f"{kind} compiled" if compiled else kind
        print(f"{device.type:6} {name:16} {n:>9.0e} {ours * 1e3:>9.3f} {theirs * 1e3:>9.3f} "
              f"{ours / theirs:>6.2f} {mark}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--sizes", type=int, nargs="*", default=None,
                        help="N (default: 4096 to 1e7 on the CPU, to 1e8 on CUDA)")
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled rows")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="auto: the CPU table, then the CUDA one if a GPU is present")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    if args.device != "cuda":
        print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, float32, "
              f"mean reduction, forward+backward, median of {args.repeat}")
        cpu_table(torch.device("cpu"), args.sizes or [4096, 65536, 10**6, 10**7], args.repeat,
                  not args.no_compile)
    if cuda:
        gpu_table(args.sizes or CUDA_SIZES, args.repeat, not args.no_compile)


if __name__ == "__main__":
    main()
