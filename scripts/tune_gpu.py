"""Time the launch shapes of the loss's Triton kernels on a GPU and print the constants to paste
into the code (about a minute on an H200; one command, nothing written).

    python scripts/tune_gpu.py                 # everything
    python scripts/tune_gpu.py --only loss     # one of: loss, host, epoch
    TRITON_INTERPRET=1 python scripts/tune_gpu.py --dry-run   # the code paths on CPU, tiny sizes

1. loss: the forward kernel (and the finishing one) of both losses for each candidate
   (elements per program, warps), float32 and bfloat16, N = 1e6 and 1e8: device time per call
   from a CUDA graph of back-to-back launches (no host time in it), the fraction of a
   device-to-device copy's bandwidth at 12 (float32) or 6 (bfloat16) bytes per element, and a
   check of the loss and gradient against the path without kernels.
2. host: forward + backward at N = 4096 and 65536, ours (with triton_launch's launcher and with
   Triton's own launch) and torch's, wall clock per call over back-to-back calls: at these sizes
   the host's work is the time.
3. epoch: fast.py's fused linear + loss kernel at 1e7 x 100, X column-major, float32 and
   bfloat16, for each candidate (tile, warps, prefetch) at 1 and at as many programs per SM as
   the compiled kernel's registers allow; against one read of X (``X.sum()``); each checked
   against the torch-ops path.

Each case ends with the best candidate and the lines to paste (constants chosen by measurement,
the figure in a comment). A candidate that fails prints its error; the rest go on. A time budget
(``--budget``) skips what is left when it runs out, and says so.
"""

from __future__ import annotations

import argparse
import statistics
import textwrap
import time
import traceback
from collections.abc import Callable

import torch
import torch.nn.functional as F

from logreg_torch import fast
from logreg_torch.loss import binary_cross_entropy, binary_cross_entropy_with_logits, route

LOSS_CANDIDATES = [(1024, 4), (2048, 4), (2048, 8), (4096, 4), (4096, 8), (8192, 8), (8192, 16)]
EPOCH_CANDIDATES = [(2048, 4, True), (4096, 4, True), (4096, 4, False), (4096, 8, True),
                    (8192, 8, True), (8192, 4, True)]
STARTED = time.perf_counter()


def out_of_time(budget: float) -> bool:
    """The budget is spent (said once per case): what is left is not timed."""
    if time.perf_counter() - STARTED <= budget:
        return False
    print(f"  time budget of {budget:.0f} s spent: the candidates left are not timed", flush=True)
    return True


def device_seconds(fn: Callable[[], object], device: torch.device, calls: int,
                   rounds: int = 5) -> float:
    """Seconds per call of ``fn`` on the device: a CUDA graph of ``calls`` back-to-back calls,
    replayed ``rounds`` times between events, median (wall clock with a sync on CPU)."""
    fn()
    fn()  # compiled, and anything lazily made
    if device.type != "cuda":
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        return (time.perf_counter() - start) / calls
    torch.cuda.synchronize()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fn()  # warm the side stream's allocator, as torch's graph recipe does
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn()
    times = []
    for _ in range(rounds):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3 / calls)
    del graph
    return statistics.median(times)


def copy_bandwidth(device: torch.device, n: int) -> float:
    src = torch.empty(n, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    return 2 * 4 * n / device_seconds(lambda: dst.copy_(src), device, calls=5)


# ----------------------------------------------------------------------------- 1. loss


def loss_inputs(kind: str, n: int, dtype: torch.dtype, device: torch.device):
    gen = torch.Generator(device=device).manual_seed(0)
    y = (torch.rand(n, generator=gen, device=device) < 0.5).to(dtype)
    if kind == "probs":
        x = torch.rand(n, generator=gen, device=device).clamp(1e-6, 1 - 1e-6).to(dtype)
    else:
        x = (torch.randn(n, generator=gen, device=device) * 3).to(dtype)
    return x, y


def reference_loss(kind: str, x: torch.Tensor, y: torch.Tensor):
    """(loss, gradient) of the path without kernels."""
    enabled, route.ENABLED = route.ENABLED, False
    try:
        xr = x.clone().requires_grad_()
        fn = binary_cross_entropy if kind == "probs" else binary_cross_entropy_with_logits
        loss = fn(xr, y)
        return loss.detach(), torch.autograd.grad(loss, xr)[0]
    finally:
        route.ENABLED = enabled


def loss_case(kind: str, n: int, dtype: torch.dtype, device: torch.device, copy_bps: float,
              budget: float) -> dict:
    """{(block, warps): seconds} for one case, each candidate checked."""
    ops = route.ops()
    x, y = loss_inputs(kind, n, dtype, device)
    want_loss, want_grad = reference_loss(kind, x, y)
    tol = dict(rtol=2e-2, atol=1e-3) if dtype != torch.float32 else dict(rtol=1e-4, atol=1e-6)
    saved = ops.BLOCK, ops.NUM_WARPS
    results = {}
    per_element = 3 * dtype.itemsize
    for block, warps in LOSS_CANDIDATES:
        if out_of_time(budget):
            break
        ops.BLOCK, ops.NUM_WARPS = block, warps
        try:
            def forward():
                return ops.launch_forward(x, y, None, None, kind == "logits", "mean", 0.0,
                                          kind == "probs", True, True, [0, 1, 1], [0, 1, 1],
                                          wrap_triton=ops._eager)
            out, grad, ok = forward()
            torch.testing.assert_close(out.float(), want_loss.float(), **tol)
            torch.testing.assert_close(grad.float(), want_grad.float(), **tol)
            assert int(ok) == 1
            seconds = device_seconds(forward, device, calls=3 if n >= 10**8 else 20)
            results[block, warps] = seconds
            print(f"  {kind:6} {str(dtype)[6:]:8} N={n:.0e} block {block:5} warps {warps:2}: "
                  f"{seconds * 1e3:8.4f} ms, {per_element * n / seconds / copy_bps:5.0%} of "
                  "copy", flush=True)
        except Exception as e:  # one failing candidate must not hide the others
            print(f"  {kind} {dtype} N={n:.0e} block {block} warps {warps}: error: "
                  f"{type(e).__name__}: {str(e)[:300]}", flush=True)
        finally:
            ops.BLOCK, ops.NUM_WARPS = saved
    return results


def section_loss(device: torch.device, sizes: list[int], copy_bps: float, budget: float) -> None:
    print("1. loss forward kernel (+ finishing kernel): device time per call (CUDA graph), "
          "fraction of copy bandwidth at the least traffic")
    cases = {}
    for n in sizes:
        for kind, dtype in (("logits", torch.float32), ("probs", torch.float32),
                            ("logits", torch.bfloat16)):
            if n < max(sizes) and dtype != torch.float32:
                continue
            cases[kind, n, dtype] = loss_case(kind, n, dtype, device, copy_bps, budget)
            torch.cuda.empty_cache() if device.type == "cuda" else None
    # One shape for all: the least geometric mean of time / the case's best time.
    shared = set.intersection(*(set(r) for r in cases.values() if r)) if cases else set()
    if not shared:
        print("  no candidate ran in every case")
        return
    score = {c: statistics.geometric_mean([r[c] / min(r.values()) for r in cases.values() if r])
             for c in shared}
    best = min(score, key=score.get)
    print(f"  best over all cases: block {best[0]}, warps {best[1]} (geometric mean "
          f"{score[best]:.3f} of each case's best)")
    figures = "; ".join(f"{k} {str(d)[6:]} {n:.0e} {r[best] * 1e3:.3f} ms"
                        for (k, n, d), r in cases.items() if best in r)
    print("  paste into logreg_torch/loss/triton_ops.py:")
    text = (f"By scripts/tune_gpu.py on {device_name(device)}, forward kernel, device time: "
            f"{figures} (candidates {LOSS_CANDIDATES}).")
    print("\n".join("# " + line for line in textwrap.wrap(text, 96)))
    print(f"BLOCK = {best[0]}  # elements per program")
    print(f"NUM_WARPS = {best[1]}")


# ----------------------------------------------------------------------------- 2. host


def host_seconds(fns: list[Callable[[], object]], device: torch.device, calls: int = 200,
                 rounds: int = 7) -> list[float]:
    """Wall seconds per call of each function over ``calls`` back-to-back calls (interleaved
    rounds, medians): at small sizes, the host's work per call."""
    for fn in fns:
        for _ in range(20):
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            sync(device)
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            sync(device)
            times[i].append((time.perf_counter() - start) / calls)
    return [statistics.median(t) for t in times]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def section_host(device: torch.device, sizes: list[int], calls: int) -> None:
    from logreg_torch.loss import triton_launch

    print("2. host: forward + backward per call, back-to-back calls (us); ratios against "
          "torch's loss")
    for kind in ("probs", "logits"):
        for n in sizes:
            x, y = loss_inputs(kind, n, torch.float32, device)
            x.requires_grad_()
            ours = binary_cross_entropy if kind == "probs" else binary_cross_entropy_with_logits
            theirs = F.binary_cross_entropy if kind == "probs" else (
                F.binary_cross_entropy_with_logits)

            def step(fn, launcher=True, x=x, y=y):
                def run():
                    triton_launch.ENABLED = launcher
                    fn(x, y).backward()
                    x.grad = None
                return run

            default = triton_launch.ENABLED
            try:
                a, b, c = host_seconds([step(ours), step(ours, False), step(theirs)], device,
                                       calls)
            finally:
                triton_launch.ENABLED = default
            print(f"  {kind:6} N={n:6}: ours {a * 1e6:6.1f} us ({a / c:.2f}x), with Triton's "
                  f"own launch {b * 1e6:6.1f} us ({b / c:.2f}x), torch's {c * 1e6:6.1f} us",
                  flush=True)


# ----------------------------------------------------------------------------- 3. epoch


def epoch_case(n: int, d: int, dtype: torch.dtype, device: torch.device, budget: float) -> dict:
    from logreg_torch.loss import triton_linear

    gen = torch.Generator(device=device).manual_seed(0)
    X = torch.randn(d, n, generator=gen, device=device, dtype=dtype).t()  # column-major
    w = torch.randn(d, generator=gen, device=device) / d ** 0.5
    y = (torch.rand(n, generator=gen, device=device) < torch.sigmoid(X.float() @ w)).float()
    bias = torch.zeros((), device=device)
    total, gw, gz = fast._epoch(X.float() if dtype != torch.float32 else X, w, bias, y, None,
                                False, True)
    want = (total / n, gw / n, gz.sum() / n)
    del gz
    read = device_seconds(lambda: X.sum(), device, calls=5)
    print(f"  N={n:.0e} D={d} {str(dtype)[6:]:8}: X.sum() {read * 1e3:.3f} ms "
          f"({X.numel() * X.element_size() / read / 1e9:.0f} GB/s)", flush=True)
    results = {}
    for tile, warps, prefetch in EPOCH_CANDIDATES:
        per_sm_tried = []
        if out_of_time(budget):
            break
        for per_sm in (1, None):
            try:
                if per_sm is None:  # as many as the registers allow, if that is more than 1
                    per_sm = resident_programs(triton_linear, warps)
                    if per_sm in per_sm_tried:
                        continue
                per_sm_tried.append(per_sm)
                config = (tile, warps, per_sm, prefetch)

                def epoch(config=config):
                    return triton_linear.forward(X, w, bias, y, None, True, False, config)

                loss, gw, gb, _ = epoch()
                tol = dict(rtol=1e-3, atol=1e-5)
                for got, expected in zip((loss, gw, gb), want, strict=True):
                    torch.testing.assert_close(got, expected, **tol)
                seconds = device_seconds(epoch, device, calls=3)
                results[config] = seconds
                print(f"    tile {tile:5} warps {warps} per SM {per_sm} prefetch "
                      f"{prefetch!s:5}: {seconds * 1e3:7.3f} ms = {seconds / read:5.2f}x "
                      f"X.sum()", flush=True)
            except Exception as e:  # one failing candidate must not hide the others
                print(f"    tile {tile} warps {warps} prefetch {prefetch}: error: "
                      f"{type(e).__name__}: {str(e)[:300]}", flush=True)
    return {c: (s, read) for c, s in results.items()}


def resident_programs(triton_linear, warps: int) -> int:
    """Programs of the last compiled epoch kernel one SM holds at once, by its registers and
    shared memory (H100/H200: 64K registers, 228 KB of shared memory, 64 warps per SM)."""
    entries = list(triton_linear._LAUNCHER.compiled.values())
    if not entries:
        return 1
    kernel = entries[-1][0]
    regs = max(getattr(kernel, "n_regs", 0), 1)
    per_warp = -(-regs * 32 // 256) * 256  # registers are handed out 256 at a time per warp
    shared = kernel.metadata.shared if hasattr(kernel, "metadata") else 0
    limits = [65536 // (per_warp * warps), 64 // warps]
    if shared:
        limits.append(228 * 1024 // (shared + 1024))
    return max(1, min(limits))


def section_epoch(device: torch.device, n: int, d: int, budget: float) -> None:
    print("3. fused epoch kernel (value + gradient, X read once) against X.sum(), "
          "column-major X")
    best = {}
    for dtype in (torch.float32, torch.bfloat16):
        results = epoch_case(n, d, dtype, device, budget)
        torch.cuda.empty_cache() if device.type == "cuda" else None
        if results:
            config = min(results, key=lambda c: results[c][0])
            best[dtype.itemsize] = config, *results[config]
    if not best:
        return
    print("  paste into logreg_torch/loss/triton_linear.py (the rows for BLOCK_D <= 256; "
          "keep the others):")
    for size, (config, seconds, read) in best.items():
        print(f"    ({size}, 256): {config},  # {n:.0e} x {d}: {seconds * 1e3:.3f} ms = "
              f"{seconds / read:.2f}x X.sum() on {device_name(device)}")


# ----------------------------------------------------------------------------- main


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (dry run)"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["loss", "host", "epoch"])
    parser.add_argument("--budget", type=float, default=85.0, help="seconds")
    parser.add_argument("--dry-run", action="store_true",
                        help="CPU tensors under Triton's interpreter, tiny sizes")
    args = parser.parse_args(argv)
    if args.dry_run:
        route.CPU_INTERPRETER = True
        device = torch.device("cpu")
        loss_sizes, host_sizes, epoch_shape, copy_n, calls = [3000, 9000], [4096], (3000, 100), \
            10**5, 3
    else:
        device = torch.device("cuda")
        loss_sizes, host_sizes, epoch_shape, copy_n, calls = [10**6, 10**8], [4096, 65536], \
            (10**7, 100), 2 * 10**8, 200
    import triton

    print(f"{device_name(device)}, torch {torch.__version__}, triton {triton.__version__}",
          flush=True)
    sections = [
        ("loss", lambda: section_loss(device, loss_sizes, copy_bandwidth(device, copy_n),
                                      args.budget)),
        ("host", lambda: section_host(device, host_sizes, calls)),
        ("epoch", lambda: section_epoch(device, *epoch_shape, args.budget)),
    ]
    for name, run in sections:
        if args.only not in (None, name):
            continue
        try:
            run()
        except Exception as e:  # one failing section must not hide the others
            print(f"  {name}: error: {type(e).__name__}: {e}", flush=True)
            traceback.print_exc(limit=4)
    print(f"total {time.perf_counter() - STARTED:.0f} s")


if __name__ == "__main__":
    main()
