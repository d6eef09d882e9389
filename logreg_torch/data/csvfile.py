"""CSV files: reading with line numbers, checking the header, parsing feature columns."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import NamedTuple

import numpy as np

from logreg_torch.data.labels import _encode_labels
from logreg_torch.data.table import DataError, Table


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
