"""One reader for the rows a trained model scores (``evaluate --data``, ``predict``): every
source ``train`` reads.

A CSV (columns by header name), a bundled name (``jackets``, ``breast_cancer``), a folder with
``X.npy`` (and ``y.npy``) or shards ``X-*.npy`` (and ``y-*.npy``), one ``X.npy`` (its labels in
the ``y.npy`` beside it), or an ``.npz`` with ``X`` (and ``y``). Columns are matched by the
feature names the checkpoint stores. NumPy arrays have no header: their columns are named
``x0``, ``x1``, ..., the names a model trained on npy or synthetic data stores (and a CSV for
such a model needs those headers, plus a label column ``target``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from logreg_torch.data.csvfile import read_csv
from logreg_torch.data.labels import _find_label, _label_text
from logreg_torch.data.preprocess import apply_standardizer
from logreg_torch.data.scoring import read_features_csv, read_labeled
from logreg_torch.data.table import DataError


@dataclass
class Rows:
    """Rows to score: preprocessed features, 0/1 targets when asked for, and for a CSV its
    header and raw rows (``predict`` echoes them)."""

    X: np.ndarray
    y: np.ndarray | None
    header: list[str] | None
    rows: list[list[str]] | None


def read_rows(path: str | Path, feature_names: list[str], preprocessing: dict,
              label_map: dict[str, int], target: str | None = None,
              labels: bool = False) -> Rows:
    """The rows of any data source for a model with these ``feature_names``; with ``labels``
    their 0/1 targets too (``target`` names a CSV's label column; default ``target``)."""
    from logreg_torch.data.sources import BUNDLED, DATASETS_DIR

    p = Path(path)
    if str(path) in BUNDLED and not p.exists():
        name, bundled_target = BUNDLED[str(path)]
        p, target = DATASETS_DIR / name, bundled_target
    if p.is_dir() or p.suffix.lower() in (".npy", ".npz"):
        X, y_raw = _read_arrays(p, labels)
        X = _columns_by_name(X, feature_names, p)
        X = apply_standardizer(X, preprocessing) if preprocessing.get("standardize") else X
        return Rows(X, None if y_raw is None else _encode_with(y_raw, label_map, p), None, None)
    csvf = read_csv(p)
    if labels:
        X, y = read_labeled(p, target or "target", feature_names, label_map, preprocessing)
        return Rows(X, y, csvf.header, csvf.rows)
    X, rows = read_features_csv(p, feature_names, preprocessing)
    return Rows(X, None, csvf.header, rows)


def _read_arrays(p: Path, labels: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """X (and y, when ``labels``) of a folder, its shards, one X.npy, or an .npz."""
    try:
        if p.suffix.lower() == ".npz" and not p.is_dir():
            return _read_npz(p, labels)
        if p.is_dir():
            names = (["X.npy"] if (p / "X.npy").is_file()
                     else sorted(f.name for f in p.glob("X-*.npy")))
            if not names:
                raise DataError("no X.npy and no X-*.npy shards in this folder", p)
            x_files = [p / n for n in names]
        else:
            x_files = [p]
        xs = [np.load(f, mmap_mode="r") for f in x_files]
        if any(x.ndim != 2 or x.shape[1] != xs[0].shape[1] for x in xs):
            raise DataError(f"X must be 2-D (rows x features), got shape "
                            f"{[x.shape for x in xs if x.ndim != 2 or x is not xs[0]][0]}", p)
        X = np.concatenate(xs) if len(xs) > 1 else xs[0]
        if not labels:
            return X, None
        y_files = [f.with_name("y" + f.name[1:]) for f in x_files]
        missing = [f.name for f in y_files if not f.is_file()]
        if missing:
            raise DataError(f"no labels: {missing[0]} is missing beside the features", p)
        y = np.concatenate([np.load(f) for f in y_files])
    except (OSError, ValueError) as e:  # unreadable, truncated, or a pickled object array
        raise DataError(f"cannot read: {e}", p) from None
    return X, _check_y(y, len(X), p)


def _read_npz(p: Path, labels: bool) -> tuple[np.ndarray, np.ndarray | None]:
    with np.load(p) as archive:
        for key in ("X", "y") if labels else ("X",):
            if key not in archive.files:
                raise DataError(f"no array {key!r} in the archive; it holds: "
                                f"{', '.join(archive.files) or 'nothing'}", p)
        X = archive["X"]
        if X.ndim != 2:
            raise DataError(f"X must be 2-D (rows x features), got shape {X.shape}", p)
        return X, _check_y(archive["y"], len(X), p) if labels else None


def _check_y(y: np.ndarray, n: int, p: Path) -> np.ndarray:
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.shape != (n,):
        raise DataError(f"X has {n} rows but y has shape {y.shape}; need ({n},)", p)
    return y


def _columns_by_name(X: np.ndarray, feature_names: list[str], p: Path) -> np.ndarray:
    names = [f"x{j}" for j in range(X.shape[1])]
    missing = [n for n in feature_names if n not in names]
    if missing:
        shown = ", ".join(feature_names[:6]) + (", ..." if len(feature_names) > 6 else "")
        raise DataError(f"arrays have no column names: their {X.shape[1]} columns are named "
                        f"x0..x{X.shape[1] - 1}, the checkpoint expects {shown}; pass a CSV "
                        f"with those headers", p)
    if len(X) == 0:
        raise DataError("empty data set: no rows", p)
    X = np.asarray(X[:, [names.index(n) for n in feature_names]], dtype=np.float64)
    bad = np.argwhere(~np.isfinite(X))
    if len(bad):
        i, j = bad[0]
        raise DataError(f"X holds {X[i, j]} at row index {i}, column {feature_names[j]}", p)
    return X


def _encode_with(y_raw: np.ndarray, label_map: dict[str, int], p: Path) -> np.ndarray:
    """0/1 targets through the checkpoint's label map (a single class is allowed)."""
    labels = list(label_map)
    y_raw = np.asarray(y_raw)
    y = np.empty(len(y_raw))
    for value in np.unique(y_raw):
        label = _find_label(_label_text(value), labels)
        if label is None:
            raise DataError(f"label {_label_text(value)!r} is not one the model knows "
                            f"({', '.join(map(repr, labels))})", p)
        y[y_raw == value] = label_map[label]
    return y
