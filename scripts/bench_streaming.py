"""How streaming reads its rows, measured: time of one pass and the peak RSS it adds.

    python scripts/bench_streaming.py                      # 1e6 x 100 (400 MB), 3 rounds
    python scripts/bench_streaming.py --rows 300000 --rounds 5

One pass = what an epoch of streamed training reads (every training chunk, ``data.chunk_size``
rows of the sorted training indices, into float64) plus the validation rows (20%, read once in
chunks the same way). Three ways, each in a fresh process (its own VmHWM, which counts the pages
of a memory map as well), in rotated order, from a warm page cache:

- ``mmap``: fancy indexing of ``np.load(mmap_mode="r")`` (what streaming did before);
- ``mmap+dontneed``: the same, then ``madvise(MADV_DONTNEED)`` over the map after each chunk,
  which drops the read pages from the process (they stay in the page cache);
- ``read``: ``Stream.take``, plain reads of at most ``READ_BYTES`` into one reused buffer.

Printed: median seconds per pass (min-max), the ratio to ``mmap``, and the median peak RSS over
the process's RSS before the pass, against the size of X.npy.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SCRIPTS = Path(__file__).resolve().parent
WAYS = ("mmap", "mmap+dontneed", "read")


def _vm_hwm() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _pieces(n: int, chunk: int) -> list[np.ndarray]:
    from logreg_torch.data.splits import split_indices

    train, val, _ = split_indices(n, 0.2, 0.0, 0)
    return [part[s:s + chunk] for part in (np.sort(train), np.sort(val))
            for s in range(0, len(part), chunk)]


def one_pass(way: str, data: Path, chunk: int) -> dict:
    """In a child: one pass the given way; seconds and the RSS it added."""
    X = np.load(data / "X.npy", mmap_mode="r")
    pieces = _pieces(len(X), chunk)
    if way.startswith("read"):
        from logreg_torch.data import streaming
        from logreg_torch.data.streaming import Stream

        if ":" in way:  # read:BYTES, another block size
            streaming.READ_BYTES = int(way.split(":")[1])

        stream = Stream([X], np.array([0, len(X)]), np.zeros(0), np.zeros(0, np.int64), {}, chunk)
        read = stream.take
    else:
        with open(data / "X.npy", "rb") as f:
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        X = np.frombuffer(mapped, X.dtype, offset=X.offset).reshape(X.shape)

        def read(rows: np.ndarray) -> np.ndarray:
            out = np.asarray(X[rows], np.float64)
            if way == "mmap+dontneed":
                mapped.madvise(mmap.MADV_DONTNEED)
            return out
    before = _vm_hwm()
    start = time.perf_counter()
    total = 0.0
    for rows in pieces:
        total += float(read(rows)[:, 0].sum())  # use the rows, as training does
    return {"seconds": time.perf_counter() - start, "added": _vm_hwm() - before,
            "check": total}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=100)
    parser.add_argument("--chunk-size", type=int, default=65536)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data-root", type=Path,
                        default=Path(tempfile.gettempdir()) / "logreg-streaming")
    parser.add_argument("--read-bytes", default="",
                        help="also time plain reads of these block sizes, e.g. 2097152,33554432")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)  # WAY DATA
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(one_pass(args.child[0], Path(args.child[1]), args.chunk_size)))
        return
    data = args.data_root / f"n{args.rows}-d{args.features}"
    if not (data / "X.npy").is_file():
        subprocess.run([sys.executable, str(SCRIPTS / "make_dataset.py"), str(data), "--rows",
                        str(args.rows), "--features", str(args.features)], check=True)
    size = (data / "X.npy").stat().st_size
    print(f"{os.cpu_count()} cores, load average "
          f"{', '.join(f'{v:.2f}' for v in os.getloadavg())}; X.npy {size / 2**20:.0f} MiB, "
          f"chunks of {args.chunk_size} rows; medians of {args.rounds} rotated rounds")
    ways = [*WAYS, *(f"read:{b}" for b in args.read_bytes.split(",") if b)]
    results: dict[str, list[dict]] = {way: [] for way in ways}
    for r in range(args.rounds + 1):  # round 0 warms the page cache, not counted
        for way in ways[r % len(ways):] + ways[:r % len(ways)]:
            out = subprocess.run([sys.executable, __file__, "--chunk-size", str(args.chunk_size),
                                  "--child", way, str(data)], check=True, capture_output=True,
                                 text=True).stdout
            if r:
                results[way].append(json.loads(out))
    base = statistics.median(r["seconds"] for r in results["mmap"])
    for way, runs in results.items():
        secs = [r["seconds"] for r in runs]
        added = statistics.median(r["added"] for r in runs)
        print(f"  {way:16s} {statistics.median(secs):.3f} s ({min(secs):.3f}-{max(secs):.3f}),"
              f" {statistics.median(secs) / base:.2f}x mmap; peak RSS +{added / 2**20:.0f} MiB"
              f" ({added / size:.2f}x X.npy)")


if __name__ == "__main__":
    main()
