"""Training rows that stay on disk: npy shards read a chunk at a time with plain reads into one
reused buffer, with a one-pass standardizer.

Plain reads, not a memory map: pages of a map that have been read stay in the process's
resident memory until the kernel needs them back, so a pass over a 3.8 GB file left the process
at its size (peak RSS 5.5 GB for 10M x 100 with 800 MB of validation rows). Read into a buffer,
the file's pages live only in the page cache, which counts against no process and which the
kernel reclaims first. Measured with ``scripts/bench_streaming.py``: see ``READ_BYTES``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from logreg_torch.config import DataConfig
from logreg_torch.data.labels import _encode_labels
from logreg_torch.data.splits import split_indices
from logreg_torch.data.table import DataError, Prepared

# Bytes read at a time. One pass over 1e6 x 100 float32 (scripts/bench_streaming.py, warm page
# cache, 2 busy cores, medians of 5): 1 MiB reads 0.64x the time of the memory map's fancy
# indexing (256 KiB 0.89x, 2 MiB 0.85x, 4 MiB 1.10x, 8 MiB 0.98x: a block that stays in cache
# while its rows are gathered), and the pass adds 44 MiB of peak RSS (the output chunk) against
# the map's 448 MiB (the whole file) and 195 MiB with madvise(MADV_DONTNEED) after each chunk
# (a chunk of validation rows spans most of the file).
READ_BYTES = 1 << 20


@dataclass
class Stream:
    """Training rows of an npy data set too large for memory, read a chunk at a time.

    ``shards`` are the X files (one X.npy, or X-*.npy in order) seen as one matrix, opened as
    memory maps for their shape, dtype and data offset only (rows are read with plain reads,
    see the module docstring); ``train`` holds sorted global row indices; ``stats`` the
    standardization. ``on_rows`` (set by a progress display) is told the rows of each chunk
    read, ``on_pass`` the rows of each pass about to start.
    """

    shards: list[np.ndarray]
    offsets: np.ndarray  # offsets[i] = first global row of shard i; offsets[-1] = total rows
    y: np.ndarray  # every label, 0/1 as uint8 (N bytes fit in memory)
    train: np.ndarray
    stats: dict
    chunk_size: int
    on_rows: Callable[[int], None] | None = None
    on_pass: Callable[[list[int]], None] | None = None
    _buffer: np.ndarray = field(default_factory=lambda: np.empty(0, np.uint8), repr=False)

    @property
    def n_train(self) -> int:
        return len(self.train)

    def take(self, rows: np.ndarray) -> np.ndarray:
        """The given sorted global rows as one float64 array (reads only the blocks of the
        files that hold them)."""
        out = np.empty((len(rows), self.shards[0].shape[1]), np.float64)
        done = 0
        for i, shard in enumerate(self.shards):
            lo, hi = np.searchsorted(rows, self.offsets[i:i + 2])
            if hi > lo:
                self._read_rows(shard, rows[lo:hi] - self.offsets[i], out[done:done + hi - lo])
                done += hi - lo
        return out

    def _read_rows(self, shard: np.ndarray, local: np.ndarray, out: np.ndarray) -> None:
        """Rows ``local`` (sorted) of one shard into ``out``, a block of at most READ_BYTES
        at a time."""
        if not isinstance(shard, np.memmap) or not shard.flags.c_contiguous:
            out[:] = shard[local]  # a Fortran-order file: rows are not contiguous on disk
            return
        row_bytes = shard.shape[1] * shard.dtype.itemsize
        per_read = max(1, READ_BYTES // row_bytes)
        if self._buffer.size < min(per_read, shard.shape[0]) * row_bytes:
            self._buffer = np.empty(min(per_read, shard.shape[0]) * row_bytes, np.uint8)
        with open(shard.filename, "rb", buffering=0) as f:
            i = 0
            while i < len(local):
                start = int(local[i])
                j = i + int(np.searchsorted(local[i:], start + per_read))
                stop = int(local[j - 1]) + 1
                block = self._read(f, shard, start, stop, row_bytes)
                if j - i == stop - start:  # every row of the block: no gather
                    out[i:j] = block
                else:
                    out[i:j] = block[local[i:j] - start]
                i = j

    def _read(self, f, shard: np.memmap, start: int, stop: int, row_bytes: int) -> np.ndarray:
        size = (stop - start) * row_bytes
        view = memoryview(self._buffer)[:size]
        f.seek(shard.offset + start * row_bytes)
        got = 0
        while got < size:
            n = f.readinto(view[got:])
            if not n:
                raise DataError(f"{shard.filename} ends before row {stop}: it is truncated",
                                shard.filename)
            got += n
        return self._buffer[:size].view(shard.dtype).reshape(stop - start, shard.shape[1])

    def chunks(self, seed: int | None = None):
        """Index arrays of the training rows, ``chunk_size`` at a time, in file order (or in a
        seeded random order of chunks, rows shuffled within each, when ``seed`` is given): one
        pass over the data (``on_pass`` is told the size of each chunk, in order)."""
        pieces = [self.train[s:s + self.chunk_size]
                  for s in range(0, self.n_train, self.chunk_size)]
        if seed is not None:
            rng = np.random.default_rng([seed, 2])
            pieces = [pieces[i] for i in rng.permutation(len(pieces))]
        if self.on_pass is not None:
            self.on_pass([len(p) for p in pieces])
        yield from pieces


def _open_shards(path: str | Path) -> tuple[list[np.ndarray], np.ndarray]:
    """Memory maps of X.npy / y.npy, or of the shards X-*.npy / y-*.npy, in name order."""
    p = Path(path)
    if not p.is_dir():
        raise DataError("data.streaming needs data.path to be a folder holding X.npy and y.npy "
                        "(or shards X-*.npy and y-*.npy)", path)
    names = ["X.npy"] if (p / "X.npy").is_file() else sorted(f.name for f in p.glob("X-*.npy"))
    if not names:
        raise DataError("no X.npy and no X-*.npy shards", path)
    xs, ys = [], []
    for name in names:
        y_name = "y" + name[1:]
        if not (p / y_name).is_file():
            raise DataError(f"{name} has no matching {y_name}", path)
        try:
            xs.append(np.load(p / name, mmap_mode="r"))
            ys.append(np.load(p / y_name, mmap_mode="r"))
        except (OSError, ValueError) as e:
            raise DataError(f"cannot read {name}: {e}", path) from None
        if xs[-1].ndim != 2 or len(xs[-1]) != len(ys[-1]) or xs[-1].shape[1] != xs[0].shape[1]:
            raise DataError(f"{name} has shape {xs[-1].shape} and {y_name} {ys[-1].shape}; every "
                            f"shard needs (rows, {xs[0].shape[1]}) and (rows,)", path)
    y = np.concatenate([np.asarray(v) for v in ys])  # labels are small: N numbers
    return xs, y


def fit_standardizer_streaming(stream_rows, width: int) -> dict[str, list[float]]:
    """Mean and population std in ONE pass over chunks (Chan et al.'s pairwise merge of
    per-chunk mean and sum of squared deviations); a constant column gets std 1."""
    n, mean, m2 = 0, np.zeros(width), np.zeros(width)
    for X in stream_rows:
        k = len(X)
        if k == 0:
            continue
        cmean = X.mean(0)
        cm2 = ((X - cmean) ** 2).sum(0)
        delta = cmean - mean
        total = n + k
        mean = mean + delta * (k / total)
        m2 = m2 + cm2 + delta**2 * (n * k / total)
        n = total
    std = np.sqrt(m2 / max(n, 1))
    std[std < 10 * np.finfo(np.float64).eps * np.maximum(1.0, np.abs(mean))] = 1.0
    return {"mean": mean.tolist(), "std": std.tolist()}


def _standardize_inplace(X: np.ndarray, stats: dict) -> np.ndarray:
    """apply_standardizer's values on a float64 array we own, without two more copies."""
    X -= np.asarray(stats["mean"], np.float64)
    X /= np.asarray(stats["std"], np.float64)
    return X


def prepare_streaming(cfg: DataConfig, seed: int,
                      dtype: torch.dtype = torch.float32) -> tuple[Stream, Prepared]:
    """Like ``prepare`` for ``data.streaming: true``: the training rows stay on disk (a
    ``Stream``), the validation and test rows are read into memory. Prepared.train is empty."""
    if cfg.source != "npy":
        raise DataError(f"data.streaming works with data.source=npy, not {cfg.source!r}")
    shards, y_raw = _open_shards(cfg.path)
    offsets = np.cumsum([0] + [len(s) for s in shards])
    for s in shards:  # the same chunked NaN/inf check as the in-memory path
        if s.dtype.kind not in "biuf":
            raise DataError(f"X must hold numbers, got dtype {s.dtype}", cfg.path)
    y01, label_map = _encode_labels(y_raw, cfg.positive_label, "y", cfg.path)
    # Per row, what streaming holds: a 0/1 byte and a 4-byte index (9 bytes, not 22 as
    # float64 labels and int64 indices: 130 MB less at 10M rows).
    del y_raw
    y01 = y01.astype(np.uint8)
    index = np.int32 if len(y01) < 2**31 else np.int64
    train, val, test = (s.astype(index) for s in split_indices(
        len(y01), cfg.val_fraction, cfg.test_fraction, seed))
    if np.unique(y01[train]).size < 2:
        raise DataError("the training split holds a single class", cfg.path)
    stream = Stream(shards, offsets, y01, train, {}, cfg.chunk_size)
    width = shards[0].shape[1]

    def checked(rows: np.ndarray) -> np.ndarray:
        X = stream.take(rows)
        bad = np.argwhere(~np.isfinite(X))
        if len(bad):
            i, j = bad[0]
            raise DataError(f"X holds {X[i, j]} at row index {rows[i]}, column index {j}",
                            cfg.path)
        return X

    if cfg.standardize:
        stream.stats = fit_standardizer_streaming((checked(r) for r in stream.chunks()), width)
    else:
        for rows in stream.chunks():  # still check every training row for NaN/inf
            checked(rows)
        stream.stats = {"mean": [0.0] * width, "std": [1.0] * width}

    def tensors(rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        # Filled a chunk at a time: float64 copies of all the rows (read, then standardized)
        # would cost four times the fp32 tensor, as much as the whole X.npy for 20% val rows.
        X = torch.empty((len(rows), width), dtype=dtype)
        for s in range(0, len(rows), cfg.chunk_size):
            part = rows[s:s + cfg.chunk_size]
            X[s:s + len(part)] = torch.from_numpy(_standardize_inplace(checked(part),
                                                                       stream.stats))
        return X, torch.tensor(y01[rows], dtype=dtype)

    empty = (torch.empty((0, width), dtype=dtype), torch.empty(0, dtype=dtype))
    prepared = Prepared(empty, tensors(val), tensors(test), [f"x{j}" for j in range(width)],
                        label_map, {"standardize": bool(cfg.standardize), **stream.stats},
                        f"npy {cfg.path} (streaming)")
    return stream, prepared


def stream_batch(stream: Stream, rows: np.ndarray, dtype: torch.dtype,
                 device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """One chunk of training rows, standardized, as tensors on the device."""
    X = _standardize_inplace(stream.take(rows), stream.stats)
    batch = (torch.tensor(X, dtype=dtype).to(device),
             torch.tensor(stream.y[rows], dtype=dtype).to(device))
    if stream.on_rows is not None:
        stream.on_rows(len(rows))
    return batch
