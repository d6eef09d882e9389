"""Data sets (bundled, CSV, NumPy, synthetic), train/val/test splits and standardization.

A mistake in a data file raises DataError with one line that names the file, the line as an
editor numbers it (header = line 1) and the column. Nothing is silently dropped.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from logreg_torch.config import DataConfig

DATASETS_DIR = Path(__file__).parent / "datasets"
# source name -> (file in DATASETS_DIR, its target column)
BUNDLED = {"jackets": ("jackets.csv", "purchase"),
           "breast_cancer": ("breast_cancer.csv", "diagnosis")}
SOURCES = ("csv", "npy", "synthetic", *BUNDLED)


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


# ----------------------------------------------------------------------------- labels

def _as_number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def default_positive_label(labels: Iterable[str]) -> str:
    """The label mapped to 1 when data.positive_label is unset.

    true/false (any case) -> true; two numbers -> the larger (so 0/1 -> 1, -1/1 -> 1);
    otherwise the label that sorts last, as scikit-learn's LabelEncoder does (classes_[1] is
    the positive class): "jacket" > "cardigan", so jacket = 1.
    """
    low, high = sorted(labels)
    if {low.lower(), high.lower()} == {"false", "true"}:
        return low if low.lower() == "true" else high
    a, b = _as_number(low), _as_number(high)
    if a is not None and b is not None:
        return low if a > b else high
    return high


def _find_label(value: object, labels: Sequence[str]) -> str | None:
    """Match a value to a label: exactly, then as a number ("1.0" is "1"), then ignoring case."""
    text = str(value).strip()
    if text in labels:
        return text
    number = _as_number(text)
    hits = [lab for lab in labels if number is not None and _as_number(lab) == number]
    hits = hits or [lab for lab in labels if lab.lower() == text.lower()]
    return hits[0] if len(hits) == 1 else None


def _label_text(value: object) -> str:
    # npy labels are numbers; show 0.0 as "0" so label maps read the same as for CSV files.
    if isinstance(value, (str, np.str_, bool, np.bool_)):
        return str(value)
    number = float(value)
    return str(int(number)) if number.is_integer() else repr(number)


def _encode_labels(y_raw: np.ndarray, positive_label: str | None, what: str,
                   path: str | Path | None) -> tuple[np.ndarray, dict[str, int]]:
    values = np.unique(y_raw)
    names = [_label_text(v) for v in values]
    if len(values) == 1:
        raise DataError(f"{what} holds a single class {names[0]!r}; need two", path)
    if len(values) != 2:
        shown = ", ".join(repr(n) for n in names[:5]) + (", ..." if len(names) > 5 else "")
        raise DataError(f"{what} must hold exactly two distinct values, found {len(names)}: "
                        f"{shown}", path)
    if positive_label is None:
        positive = default_positive_label(names)
    else:
        positive = _find_label(positive_label, names)
        if positive is None:
            raise DataError(f"data.positive_label={positive_label!r} is not a label of {what}; "
                            f"the labels are {names[0]!r} and {names[1]!r}", path)
    y = (np.asarray(y_raw) == values[names.index(positive)]).astype(np.float64)
    negative = names[1 - names.index(positive)]
    return y, {negative: 0, positive: 1}


# ----------------------------------------------------------------------------- CSV

class CsvFile(NamedTuple):
    path: str
    header: list[str]
    rows: list[list[str]]  # data rows, every one as long as the header
    lines: list[int]  # line where each row starts (header = line 1; quoted fields may span lines)


def read_csv(path: str | Path) -> CsvFile:
    """Read a CSV with a header row; blank lines are skipped (they hold no data)."""
    p = Path(path)
    if p.is_dir():
        raise DataError("is a folder, expected a CSV file", path)
    header: list[str] | None = None
    rows, lines, start = [], [], 1
    try:
        # utf-8-sig drops the byte-order mark spreadsheet programs put before the header.
        with open(p, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            for fields in reader:
                if header is None and fields:
                    header = [name.strip() for name in fields]
                    _check_header(header, path, start)
                elif fields:
                    if len(fields) != len(header):
                        raise DataError(f"row has {len(fields)} fields, header has {len(header)}",
                                        path, start)
                    rows.append(fields)
                    lines.append(start)
                start = reader.line_num + 1
    except FileNotFoundError:
        raise DataError("file not found", path) from None
    except UnicodeDecodeError as e:
        raise DataError(f"not UTF-8 text (bad byte at offset {e.start})", path) from None
    except csv.Error as e:
        raise DataError(f"malformed CSV: {e}", path, start) from None
    if header is None:
        raise DataError("file is empty", path)
    return CsvFile(str(path), header, rows, lines)


def _check_header(header: list[str], path: str | Path, line: int) -> None:
    for i, name in enumerate(header):
        if not name:
            raise DataError(f"column {i + 1} of the header has no name", path, line)
        if header.index(name) != i:
            raise DataError("column name appears twice in the header", path, line, name)


def _parse_features(csvf: CsvFile, names: list[str]) -> np.ndarray:
    cols = [csvf.header.index(name) for name in names]
    cells = [[row[j] for j in cols] for row in csvf.rows]
    try:  # fast path; on failure walk the cells to say which one is wrong
        X = np.array(cells, dtype=np.float64).reshape(len(cells), len(cols))
    except ValueError:
        X = np.empty((len(cells), len(cols)))
        for i, row in enumerate(cells):
            for k, text in enumerate(row):
                try:
                    X[i, k] = float(text)
                except ValueError:
                    problem = "missing value" if not text.strip() else f"not a number: {text!r:.40}"
                    raise DataError(problem, csvf.path, csvf.lines[i], names[k]) from None
    bad = np.argwhere(~np.isfinite(X))
    if len(bad):
        i, k = bad[0]
        raise DataError(f"{cells[i][k].strip()!r} is not a finite number", csvf.path,
                        csvf.lines[i], names[k])
    return X


def _load_csv(path: str | Path, target: str, features: list[str] | None,
              positive_label: str | None, source: str) -> Table:
    csvf = read_csv(path)
    columns = ", ".join(csvf.header)
    if target not in csvf.header:
        raise DataError(f"no target column {target!r} (data.target); columns are: {columns}", path)
    names = [h for h in csvf.header if h != target] if features is None else list(features)
    for name in names:
        if name not in csvf.header:
            raise DataError(f"no such column (data.features); columns are: {columns}", path,
                            column=name)
        if name == target:
            raise DataError("the target column cannot also be a feature", path, column=name)
        if names.count(name) > 1:
            raise DataError("listed twice in data.features", path, column=name)
    if not names:
        raise DataError("no feature columns besides the target", path)
    if not csvf.rows:
        raise DataError("empty data set: no rows below the header", path)
    X = _parse_features(csvf, names)
    t = csvf.header.index(target)
    labels = [row[t].strip() for row in csvf.rows]
    for line, label in zip(csvf.lines, labels, strict=True):
        if not label:
            raise DataError("missing target value", path, line, target)
    y, label_map = _encode_labels(np.array(labels), positive_label, f"target column {target!r}",
                                  path)
    return Table(X, y, names, label_map, source)


# ----------------------------------------------------------------------------- NumPy

def _load_npy(path: str | Path, positive_label: str | None, chunk_size: int) -> Table:
    p = Path(path)
    try:
        if p.is_dir():
            for name in ("X.npy", "y.npy"):
                if not (p / name).is_file():
                    raise DataError(f"no {name} (a folder for source npy holds X.npy and y.npy)",
                                    path)
            # Memory-mapped: nothing is read until a split asks for its rows.
            X, y = np.load(p / "X.npy", mmap_mode="r"), np.load(p / "y.npy", mmap_mode="r")
        elif p.suffix == ".npz" and p.is_file():
            with np.load(p) as archive:
                missing = [k for k in ("X", "y") if k not in archive.files]
                if missing:
                    raise DataError(f"no array {missing[0]!r} in the archive; it holds: "
                                    f"{', '.join(archive.files) or 'nothing'}", path)
                X, y = archive["X"], archive["y"]
        else:
            raise DataError(f"{'not found; ' if not p.exists() else ''}source npy wants a "
                            "folder with X.npy and y.npy, or a .npz file", path)
    except DataError:
        raise
    except (OSError, ValueError) as e:  # unreadable, truncated, or a pickled object array
        raise DataError(f"cannot read: {e}", path) from None
    if X.ndim != 2:
        raise DataError(f"X must be 2-D (rows x features), got shape {X.shape}", path)
    if X.dtype.kind not in "biuf":
        raise DataError(f"X must hold numbers, got dtype {X.dtype}", path)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or len(y) != len(X):
        raise DataError(f"X has {len(X)} rows but y has shape {y.shape}; need ({len(X)},)", path)
    if len(X) == 0 or X.shape[1] == 0:
        raise DataError(f"empty data set: X has shape {X.shape}", path)
    if X.dtype.kind == "f":  # in chunks, so a memory map is never read whole at once
        for start in range(0, len(X), chunk_size):
            bad = np.argwhere(~np.isfinite(X[start:start + chunk_size]))
            if len(bad):
                i, j = bad[0]
                raise DataError(f"X holds {X[start + i, j]} at row index {start + i}, column "
                                f"index {j}", path)
    y01, label_map = _encode_labels(np.asarray(y), positive_label, "y", path)
    names = [f"x{j}" for j in range(X.shape[1])]
    return Table(X, y01, names, label_map, f"npy {path}")


# ----------------------------------------------------------------------------- synthetic

def make_classification(n_samples: int, n_features: int, n_informative: int, class_sep: float,
                        weights: Sequence[float] | None,
                        seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two classes of Gaussian clusters, a numpy take on sklearn's make_classification.

    As there: each class gets two clusters (one when n_informative is 1) centred on distinct
    vertices of a hypercube with side 2 * class_sep in the informative subspace, each cluster
    a standard normal times a random matrix (so its features covary); the remaining features
    are pure noise. Unlike it: no redundant or repeated features, no label noise (flip_y),
    informative features come first. weights are the class proportions [w0, w1] (or [w0]).
    """
    if n_samples < 2 or not 1 <= n_informative <= n_features:
        raise DataError("synthetic data needs data.n_samples >= 2 and 1 <= data.n_informative "
                        f"<= data.n_features, got {n_samples}, {n_informative}, {n_features}")
    w = [0.5, 0.5] if weights is None else [float(v) for v in weights]
    if len(w) == 1:
        w.append(1.0 - w[0])
    if len(w) != 2 or min(w) <= 0 or abs(sum(w) - 1.0) > 1e-6:
        raise DataError(f"data.weights={weights} must be two positive class proportions "
                        "summing to 1 (or one, the proportion of class 0)")
    n0 = math.floor(n_samples * w[0] + 0.5)
    if not 0 < n0 < n_samples:
        raise DataError(f"data.weights={weights} leaves a class empty with {n_samples} samples")
    rng = np.random.default_rng(seed)
    per_class = 2 if n_informative >= 2 else 1
    while True:  # distinct vertices; a few tries at most
        vertices = rng.integers(0, 2, size=(2 * per_class, n_informative))
        if len(np.unique(vertices, axis=0)) == len(vertices):
            break
    centroids = (2.0 * vertices - 1.0) * class_sep
    y = (np.arange(n_samples) >= n0).astype(np.int64)  # n0 zeros then ones; shuffled below
    # Cluster c belongs to class c % 2, as in sklearn; a class's rows alternate between its
    # clusters. Columns past n_informative stay pure noise.
    cluster = y + 2 * (np.arange(n_samples) % per_class)
    X = rng.standard_normal((n_samples, n_features))
    for c, centroid in enumerate(centroids):
        rows = cluster == c
        cov = 2.0 * rng.random((n_informative, n_informative)) - 1.0
        X[rows, :n_informative] = X[rows, :n_informative] @ cov + centroid
    order = rng.permutation(n_samples)
    return X[order], y[order]


# ----------------------------------------------------------------------------- entry points

def load_table(cfg: DataConfig, seed: int) -> Table:
    """Load cfg.source (csv | npy | synthetic | jackets | breast_cancer) into a Table.

    Labels may be any two distinct values; data.positive_label picks the one mapped to 1,
    otherwise default_positive_label decides (1/true, else the label that sorts last).
    """
    if cfg.source in BUNDLED or cfg.source == "synthetic":
        if cfg.path is not None:
            raise DataError(f"data.path is not used by data.source={cfg.source!r}; set "
                            f"data.source=csv or npy to read {cfg.path}")
    elif cfg.source in ("csv", "npy") and cfg.path is None:
        raise DataError(f"data.source={cfg.source!r} needs data.path")
    if cfg.source in ("npy", "synthetic") and cfg.features is not None:
        raise DataError(f"data.features selects CSV columns; it does not apply to {cfg.source!r}")
    if cfg.source in BUNDLED:
        name, target = BUNDLED[cfg.source]
        return _load_csv(DATASETS_DIR / name, cfg.target or target, cfg.features,
                         cfg.positive_label, f"bundled data set {cfg.source!r}")
    if cfg.source == "csv":
        if cfg.target is None:
            columns = ", ".join(read_csv(cfg.path).header)
            raise DataError(f"data.target must name the label column; columns are: {columns}",
                            cfg.path)
        return _load_csv(cfg.path, cfg.target, cfg.features, cfg.positive_label, f"csv {cfg.path}")
    if cfg.source == "npy":
        return _load_npy(cfg.path, cfg.positive_label, cfg.chunk_size)
    if cfg.source == "synthetic":
        X, y = make_classification(cfg.n_samples, cfg.n_features, cfg.n_informative,
                                   cfg.class_sep, cfg.weights, seed)
        y01, label_map = _encode_labels(y, cfg.positive_label, "synthetic labels", None)
        return Table(X, y01, [f"x{j}" for j in range(X.shape[1])], label_map,
                     f"synthetic data (seed {seed})")
    raise DataError(f"data.source={cfg.source!r} is not one of: {', '.join(SOURCES)}")


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


def split(table: Table, val_fraction: float, test_fraction: float, seed: int) -> Splits:
    """Seeded random train/val/test split (not stratified); the train split needs both classes."""
    train, val, test = split_indices(len(table.y), val_fraction, test_fraction, seed)
    if np.unique(table.y[train]).size < 2:
        raise DataError(f"the training split of {table.source} holds a single class; more rows "
                        "of the other class are needed")

    def take(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(table.X[idx]), table.y[idx]

    return Splits(take(train), take(val), take(test))


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


def prepare(cfg: DataConfig, seed: int, dtype: torch.dtype = torch.float32) -> Prepared:
    """load_table + split + standardize (fitted on train only) + CPU tensors of dtype."""
    table = load_table(cfg, seed)
    splits = split(table, cfg.val_fraction, cfg.test_fraction, seed)
    d = len(table.feature_names)
    # Without standardization store the identity, so applying it is always safe.
    stats = (fit_standardizer(splits.train[0], cfg.chunk_size) if cfg.standardize
             else {"mean": [0.0] * d, "std": [1.0] * d})

    def tensors(pair: tuple[np.ndarray, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        X, y = pair
        X = apply_standardizer(X, stats) if cfg.standardize else np.asarray(X)
        return torch.tensor(X, dtype=dtype), torch.tensor(y, dtype=dtype)

    return Prepared(tensors(splits.train), tensors(splits.val), tensors(splits.test),
                    table.feature_names, table.label_map,
                    {"standardize": bool(cfg.standardize), **stats}, table.source)


def _features_of(csvf: CsvFile, feature_names: list[str], preprocessing: dict) -> np.ndarray:
    missing = [name for name in feature_names if name not in csvf.header]
    if missing:
        raise DataError(f"missing column(s) {', '.join(map(repr, missing))}; the checkpoint "
                        f"expects these columns: {', '.join(feature_names)}", csvf.path)
    if not csvf.rows:
        raise DataError("empty data set: no rows below the header", csvf.path)
    X = _parse_features(csvf, feature_names)
    return apply_standardizer(X, preprocessing) if preprocessing.get("standardize") else X


def read_features_csv(path: str | Path, feature_names: list[str],
                      preprocessing: dict) -> tuple[np.ndarray, list[list[str]]]:
    """The model's feature columns (by name, any order, extra columns allowed), preprocessed,
    and the raw data rows (no header; read_csv(path).header has it) for echoing."""
    csvf = read_csv(path)
    return _features_of(csvf, feature_names, preprocessing), csvf.rows


def read_labeled(path: str | Path, target: str, feature_names: list[str],
                 label_map: dict[str, int], preprocessing: dict) -> tuple[np.ndarray, np.ndarray]:
    """Preprocessed features and 0/1 targets (float64) of a labeled CSV, with the stored
    label_map; a single class is allowed here."""
    csvf = read_csv(path)
    if target not in csvf.header:
        raise DataError(f"no target column {target!r}; columns are: {', '.join(csvf.header)}",
                        path)
    X = _features_of(csvf, feature_names, preprocessing)
    t, labels = csvf.header.index(target), list(label_map)
    y = np.empty(len(csvf.rows))
    for i, row in enumerate(csvf.rows):
        label = _find_label(row[t], labels)
        if label is None:
            raise DataError(f"label {row[t].strip()!r} is not one the model knows "
                            f"({', '.join(map(repr, labels))})", path, csvf.lines[i], target)
        y[i] = label_map[label]
    return X, y


# ----------------------------------------------------------------------------- streaming

@dataclass
class Stream:
    """Training rows of an npy data set too large for memory, read a chunk at a time.

    ``X`` is a list of memory-mapped shards (one for X.npy, or X-*.npy files in order) seen as
    one matrix; ``train`` holds sorted global row indices; ``stats`` the standardization.
    """

    shards: list[np.ndarray]
    offsets: np.ndarray  # offsets[i] = first global row of shard i; offsets[-1] = total rows
    y: np.ndarray  # every label, 0/1 (N numbers fit in memory)
    train: np.ndarray
    stats: dict
    chunk_size: int

    @property
    def n_train(self) -> int:
        return len(self.train)

    def take(self, rows: np.ndarray) -> np.ndarray:
        """The given sorted global rows as one float64 array (reads only those rows)."""
        parts = []
        for i, shard in enumerate(self.shards):
            lo, hi = np.searchsorted(rows, self.offsets[i:i + 2])
            if hi > lo:
                parts.append(np.asarray(shard[rows[lo:hi] - self.offsets[i]], np.float64))
        width = self.shards[0].shape[1]
        if len(parts) == 1:  # no concatenate copy: the fancy-indexed read is already ours
            return parts[0]
        return np.concatenate(parts) if parts else np.empty((0, width))

    def chunks(self, seed: int | None = None):
        """Index arrays of the training rows, ``chunk_size`` at a time, in file order (or in a
        seeded random order of chunks, rows shuffled within each, when ``seed`` is given)."""
        pieces = [self.train[s:s + self.chunk_size]
                  for s in range(0, self.n_train, self.chunk_size)]
        if seed is not None:
            rng = np.random.default_rng([seed, 2])
            pieces = [pieces[i] for i in rng.permutation(len(pieces))]
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
    train, val, test = split_indices(len(y01), cfg.val_fraction, cfg.test_fraction, seed)
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
    return (torch.tensor(X, dtype=dtype).to(device),
            torch.tensor(stream.y[rows], dtype=dtype).to(device))
