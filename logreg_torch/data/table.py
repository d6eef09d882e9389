"""What every data source returns: DataError for people, the Table, its Splits and the
Prepared tensors that training takes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


class DataError(ValueError):
    """A mistake in the user's data or data settings; the message is one line for people."""

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None,
                 column: str | None = None):
        where = [str(path)] if path is not None else []
        if line is not None:
            where.append(f"line {line}")
        if column is not None:
            where.append(f"column {column!r}")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)
        self.path, self.line, self.column = path, line, column


@dataclass
class Table:
    X: np.ndarray  # (N, D) as read: float64 from CSV, the file's dtype (memory-mapped) from .npy
    y: np.ndarray  # (N,) float64 of 0/1
    feature_names: list[str]
    label_map: dict[str, int]  # original label as text -> 0/1, e.g. {"cardigan": 0, "jacket": 1}
    source: str


@dataclass
class Splits:
    train: tuple[np.ndarray, np.ndarray]
    val: tuple[np.ndarray, np.ndarray]  # (0, D) and (0,) when val_fraction is 0
    test: tuple[np.ndarray, np.ndarray]


@dataclass
class Prepared:
    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    feature_names: list[str]
    label_map: dict[str, int]
    preprocessing: dict  # {"standardize": bool, "mean": [...], "std": [...]}: checkpoint-safe
    source: str
