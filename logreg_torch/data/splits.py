"""Seeded train/val/test splits."""

from __future__ import annotations

import math

import numpy as np

from logreg_torch.data.table import DataError, Splits, Table


def split_indices(n: int, val_fraction: float, test_fraction: float,
                  seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted row indices of the train, val and test splits (a seeded random permutation)."""
    fractions = {"data.val_fraction": val_fraction, "data.test_fraction": test_fraction}
    sizes = {}
    for key, fraction in fractions.items():
        if not 0.0 <= fraction < 1.0:
            raise DataError(f"{key}={fraction} must be at least 0 and below 1")
        sizes[key] = math.floor(n * fraction + 0.5)
        if fraction > 0 and sizes[key] == 0:
            raise DataError(f"{key}={fraction} of {n} rows gives an empty split; raise it or "
                            "set it to 0")
    n_val, n_test = sizes.values()
    if n - n_val - n_test <= 0:
        raise DataError(f"data.val_fraction={val_fraction} and data.test_fraction="
                        f"{test_fraction} leave no training rows out of {n}")
    # Its own stream, so the split does not echo the draws that made synthetic data.
    order = np.random.default_rng([seed, 1]).permutation(n)
    # Sorted: each split keeps file order, and a memory map is read front to back.
    return (np.sort(order[n_val + n_test:]), np.sort(order[:n_val]),
            np.sort(order[n_val:n_val + n_test]))


def check_two_classes(y_train: np.ndarray, source: str) -> None:
    if np.unique(y_train).size < 2:
        raise DataError(f"the training split of {source} holds a single class; more rows "
                        "of the other class are needed")


def split(table: Table, val_fraction: float, test_fraction: float, seed: int) -> Splits:
    """Seeded random train/val/test split (not stratified); the train split needs both classes."""
    train, val, test = split_indices(len(table.y), val_fraction, test_fraction, seed)
    check_two_classes(table.y[train], table.source)

    def take(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(table.X[idx]), table.y[idx]

    return Splits(take(train), take(val), take(test))
