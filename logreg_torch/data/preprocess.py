"""Standardization (fitted on the training split only) and prepare(cfg): table -> tensors."""

from __future__ import annotations

import numpy as np
import torch

from logreg_torch.config import DataConfig
from logreg_torch.data.onepass import read_splits, standardize_
from logreg_torch.data.sources import load_table
from logreg_torch.data.splits import check_two_classes, split_indices
from logreg_torch.data.table import Prepared


def fit_standardizer(X: np.ndarray, chunk_size: int = 65536) -> dict[str, list[float]]:
    """Per-column mean and (population) std in float64; a constant column gets std 1.

    Two passes over row chunks, so a memory map never needs a full-size float64 copy.
    """
    n = len(X)
    if n == 0:
        raise ValueError("cannot fit a standardizer on zero rows")
    chunks = range(0, n, chunk_size)
    mean = sum(np.asarray(X[s:s + chunk_size], np.float64).sum(0) for s in chunks) / n
    var = sum(((np.asarray(X[s:s + chunk_size], np.float64) - mean) ** 2).sum(0)
              for s in chunks) / n
    std = np.sqrt(var)
    # Rounding leaves a constant column with a tiny nonzero std; dividing by it would blow
    # rounding noise up to order 1 (sklearn's StandardScaler guards the same way).
    std[std < 10 * np.finfo(np.float64).eps * np.maximum(1.0, np.abs(mean))] = 1.0
    return {"mean": mean.tolist(), "std": std.tolist()}


def apply_standardizer(X: np.ndarray, stats: dict) -> np.ndarray:
    """(X - mean) / std as float64."""
    mean, std = np.asarray(stats["mean"], np.float64), np.asarray(stats["std"], np.float64)
    if X.ndim != 2 or X.shape[1] != mean.size:
        raise ValueError(f"X has shape {X.shape}, the standardizer has {mean.size} columns")
    return (np.asarray(X, np.float64) - mean) / std


def prepare(cfg: DataConfig, seed: int, dtype: torch.dtype = torch.float32,
            column_major: bool = False) -> Prepared:
    """load_table + split + standardize (fitted on train only) + CPU tensors of dtype.

    The features are read once, straight into the split tensors, and standardized in place
    (``data/onepass.py``); ``column_major`` stores the training features column-major, the
    layout of the fused full-batch path.
    """
    table = load_table(cfg, seed, check_finite=False)  # read_splits checks every row
    rows = split_indices(len(table.y), cfg.val_fraction, cfg.test_fraction, seed)
    check_two_classes(table.y[rows[0]], table.source)
    target = torch.empty(0, dtype=dtype).numpy().dtype
    # Standardize values as read: a float64 CSV or synthetic table into a float32 run is
    # standardized in float64 and rounded once, as before (a copy, of a table held anyway).
    work = dtype if np.can_cast(table.X.dtype, target, "safe") else torch.float64
    Xs, moments = read_splits(table.X, list(rows), work, [column_major, False, False], cfg.path)
    d = len(table.feature_names)
    # Without standardization store the identity, so applying it is always safe.
    stats = moments.stats() if cfg.standardize else {"mean": [0.0] * d, "std": [1.0] * d}
    if cfg.standardize:
        for X in Xs:
            standardize_(X, stats)
    Xs = [X.to(dtype) for X in Xs]  # strides kept: column-major stays column-major
    train, val, test = ((X, torch.tensor(table.y[r], dtype=dtype))
                        for X, r in zip(Xs, rows, strict=True))
    return Prepared(train, val, test, table.feature_names, table.label_map,
                    {"standardize": bool(cfg.standardize), **stats}, table.source)
