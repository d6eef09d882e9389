"""The features of a table read once, a chunk of rows at a time, into the split tensors.

One pass over ``Table.X`` (from X.npy: plain file reads into one reused buffer, so neither a
memory map's pages nor a full-size copy are held) writes each row straight into its split's
tensor, in the run's dtype and in the layout training wants (column-major for the fused
full-batch path), checks it for NaN/inf and accumulates the training split's statistics in
float64 (per-chunk mean and squared deviations, merged as Chan et al. do, so they are as exact
as a two-pass float64 fit). ``standardize_`` then works in place. On a 1e6 x 100 float32 file
this holds about the data's size plus a few MB, where a float64 copy held 6.7x it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from logreg_torch.data.table import DataError

# Rows per chunk aim at ~4 MB of the file: the chunk, its float64 copy and the write into the
# split tensors stay in cache. (1e6 x 100 float32: 0.20 s for the pass, np.load 0.27 s.)
CHUNK_BYTES = 1 << 22


class Moments:
    """Per-column count, mean and sum of squared deviations, in float64, chunk by chunk."""

    def __init__(self, width: int) -> None:
        self.n, self.mean, self.m2 = 0, np.zeros(width), np.zeros(width)
        self._buf = np.empty((0, width))

    def add(self, rows: np.ndarray) -> None:
        k = len(rows)
        if k == 0:
            return
        if len(self._buf) < k:
            self._buf = np.empty((k, rows.shape[1]))
        x = self._buf[:k]
        np.copyto(x, rows)
        chunk_mean = x.sum(0) / k
        x -= chunk_mean
        chunk_m2 = np.einsum("ij,ij->j", x, x)
        total = self.n + k
        delta = chunk_mean - self.mean
        self.mean += delta * (k / total)
        self.m2 += chunk_m2 + delta**2 * (self.n * k / total)
        self.n = total

    def stats(self) -> dict[str, list[float]]:
        """Mean and population std; a constant column gets std 1 (as fit_standardizer)."""
        std = np.sqrt(self.m2 / max(self.n, 1))
        std[std < 10 * np.finfo(np.float64).eps * np.maximum(1.0, np.abs(self.mean))] = 1.0
        return {"mean": self.mean.tolist(), "std": std.tolist()}


def _row_chunks(X: np.ndarray, rows: int) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, rows) of X, ``rows`` at a time. A C-ordered memory map is read with plain
    reads into one buffer, overwritten chunk after chunk: its pages are never mapped."""
    n = len(X)
    if isinstance(X, np.memmap) and X.flags.c_contiguous and X.filename:
        buf = np.empty((min(rows, n), X.shape[1]), X.dtype)
        with open(X.filename, "rb", buffering=0) as f:
            f.seek(X.offset)
            for start in range(0, n, rows):
                chunk = buf[:min(rows, n - start)]
                view = memoryview(chunk).cast("B")
                got = f.readinto(view)
                while got < len(view):  # a short read is allowed; read the rest
                    more = f.readinto(view[got:])
                    if not more:
                        raise DataError(f"file ended at row {start}", X.filename)
                    got += more
                yield start, chunk
    else:
        for start in range(0, n, rows):
            yield start, np.asarray(X[start:start + rows])


def _check_finite(chunk: np.ndarray, start: int, path: str | Path | None) -> None:
    if chunk.dtype.kind == "f" and not np.isfinite(chunk).all():
        i, j = np.argwhere(~np.isfinite(chunk))[0]
        raise DataError(f"X holds {chunk[i, j]} at row index {start + i}, column index {j}",
                        path)


def read_splits(X: np.ndarray, splits: list[np.ndarray], dtype: torch.dtype,
                column_major: list[bool], path: str | Path | None = None
                ) -> tuple[list[torch.Tensor], Moments]:
    """The rows of each split (sorted row indices) of X as tensors of ``dtype`` (column-major
    where asked), and the float64 moments of the first split (the training rows)."""
    n, width = X.shape
    which = None
    if sum(len(rows) for rows in splits[1:]):  # else every row is in the first split
        which = np.zeros(n, np.int8)
        for s, rows in enumerate(splits[1:], start=1):
            which[rows] = s
    outs = [torch.empty((width, len(rows)), dtype=dtype).t() if cm
            else torch.empty((len(rows), width), dtype=dtype)
            for rows, cm in zip(splits, column_major, strict=True)]
    targets = [out.numpy() for out in outs]  # views: numpy writes into the tensors
    filled = [0] * len(splits)
    moments = Moments(width)
    step = max(1, CHUNK_BYTES // max(1, width * X.dtype.itemsize))
    for start, chunk in _row_chunks(X, step):
        _check_finite(chunk, start, path)
        for s, out in enumerate(targets if which is not None else targets[:1]):
            part = chunk if which is None else chunk[which[start:start + len(chunk)] == s]
            if s == 0:
                moments.add(part)
            # numpy's copy, one thread: torch's own is faster alone (0.10 s against 0.19 s for
            # 1e6 x 100 into column-major) but its OpenMP threads made it 2-7x slower on a
            # busy machine
            out[filled[s]:filled[s] + len(part)] = part
            filled[s] += len(part)
    return outs, moments


def standardize_(X: torch.Tensor, stats: dict) -> torch.Tensor:
    """(X - mean) / std in place: computed in float64 a slice at a time, rounded once to X's
    dtype, so each value is what the float64 reference gives (``apply_standardizer``, then
    the cast). Column by column when X is column-major: each slice is then contiguous.

    (In float32 it would take 0.10 s instead of 0.25 s for 1e6 x 100, but values would move
    by up to a few units in the last place, and runs would no longer repeat those trained on
    the float64 path, checkpoints of which resume bitwise: tests/test_runs.py.)
    """
    mean, std = np.asarray(stats["mean"], np.float64), np.asarray(stats["std"], np.float64)
    A = X.numpy()
    if X.dim() == 2 and X.stride(0) == 1 and len(A) > 1:  # column-major
        buf = np.empty(min(len(A), _SLICE))
        for j in range(A.shape[1]):
            for start in range(0, len(A), _SLICE):
                _standardize_slice(A[start:start + _SLICE, j], mean[j], std[j], buf)
    else:
        rows = max(1, _SLICE // max(1, A.shape[1]))
        buf = np.empty((min(len(A), rows), A.shape[1]))
        for start in range(0, len(A), rows):
            _standardize_slice(A[start:start + rows], mean, std, buf)
    return X


_SLICE = 1 << 16  # float64 elements a slice: 512 KB, in cache


def _standardize_slice(view: np.ndarray, mean, std, buf: np.ndarray) -> None:
    tmp = buf[:len(view)]
    np.subtract(view, mean, out=tmp)
    tmp /= std
    view[...] = tmp
