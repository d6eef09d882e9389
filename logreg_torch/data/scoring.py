"""Rows to score with a trained model: a CSV's feature columns by name, preprocessed as the
checkpoint says, and its labels through the stored label map."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from logreg_torch.data.csvfile import CsvFile, _parse_features, read_csv
from logreg_torch.data.labels import _find_label
from logreg_torch.data.preprocess import apply_standardizer
from logreg_torch.data.table import DataError


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
