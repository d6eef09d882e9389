"""Write a large synthetic classification data set as .npy files, for streaming and benchmarks.

    python scripts/make_dataset.py data/big --rows 1000000 --features 100            # X.npy, y.npy
    python scripts/make_dataset.py data/big --rows 10000000 --features 100 --shard-rows 1000000
                                                     # X-00000.npy, y-00000.npy, ... (shards)

Rows are generated and written a shard at a time (never the whole matrix in memory), each file
atomically. Train from it with data.source=npy data.path=data/big (add data.streaming=true to
keep it on disk).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np


def make_rows(rng: np.random.Generator, n: int, w: np.ndarray, sep: float,
              scales: np.ndarray | None = None) -> tuple:
    """Features N(0, 1), each column times its scale when given; labels from a logistic model
    with weights w on the unscaled features (so a linear model fits)."""
    X = rng.standard_normal((n, len(w)), dtype=np.float32)
    logits = sep * (X @ w)
    if scales is not None:
        X *= scales
    y = (rng.random(n) < 1 / (1 + np.exp(-logits))).astype(np.float32)
    return X, y


def save_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, array)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to write")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=100)
    parser.add_argument("--informative", type=int, default=None,
                        help="features that carry signal (default: all, at most 20)")
    parser.add_argument("--sep", type=float, default=1.0, help="scale of the true logits")
    parser.add_argument("--shard-rows", type=int, default=None,
                        help="rows per shard file (default: one X.npy / y.npy)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scales", type=float, default=0.0, metavar="S",
                        help="column j scaled by 10**u, u from -S to S (default 0: unscaled)")
    args = parser.parse_args(argv)
    if args.informative is None:
        args.informative = min(args.features, 20)
    if args.rows < 2 or args.features < 1 or not 1 <= args.informative <= args.features:
        parser.error("need rows >= 2, features >= 1 and 1 <= informative <= features")
    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    w = np.zeros(args.features, np.float32)
    w[: args.informative] = rng.standard_normal(args.informative) / np.sqrt(args.informative)
    scales = None
    if args.scales:
        scales = np.logspace(-args.scales, args.scales, args.features).astype(np.float32)
    shard = args.shard_rows or args.rows
    for i, start in enumerate(range(0, args.rows, shard)):
        X, y = make_rows(rng, min(shard, args.rows - start), w, args.sep * 3, scales)
        suffix = ".npy" if args.shard_rows is None else f"-{i:05d}.npy"
        save_npy(args.out / f"X{suffix}", X)
        save_npy(args.out / f"y{suffix}", y)
    print(f"wrote {args.rows} x {args.features} to {args.out}")


if __name__ == "__main__":
    main()
