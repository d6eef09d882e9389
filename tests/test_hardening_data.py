"""Bad input, end to end through ``logreg_torch.cli.main``: every mistake ends with exit code 2
and exactly one ``error:`` line on stderr (what, where, how to fix), never a traceback; odd but
valid input (a BOM, quoted fields, a constant column) trains. This file: the data files of
``train`` (those of ``predict`` and ``evaluate``: test_hardening_checkpoints.py).

The loader-level checks live beside their modules (test_data_sources.py); this file proves that
the same mistakes reach a user of the command line as one clear line, and adds the cases that
file lacks.
"""

from __future__ import annotations

import csv
import io
import math

import numpy as np
import pytest
import torch
from hardening_helpers import (  # tests/ is on sys.path under pytest
    DEFAULT,
    HEADER,
    QUICK,
    assert_all_in,
    csv_train_argv,
    error_line,
    labeled_rows,
    write_rows,
)

from logreg_torch import cli
from logreg_torch.checkpoint import load_checkpoint
from logreg_torch.data import split_indices

pytestmark = pytest.mark.usefixtures("no_figures")

# ============================================================================ data

def rows_text(rows: list[list[object]], header: list[str] = HEADER) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([header, *rows])
    return buf.getvalue()


GOOD = labeled_rows(20)


def with_cell(row: int, col: int, value: str) -> str:
    rows = [list(r) for r in GOOD]
    rows[row][col] = value
    return rows_text(rows)


def single_class_in_train() -> str:
    # Ten rows of "x" but one "y", placed where the seed-0 split with val_fraction 0.5 puts a
    # validation row: the file has two classes, its training split one.
    _, val, _ = split_indices(10, 0.5, 0.0, seed=0)
    return rows_text([[i, i, i, "y" if i == val[0] else "x"] for i in range(10)])


DATA = {
    "missing target column": (rows_text(GOOD), ["data.target=nope"],
                              ["no target column 'nope' (data.target)", "columns are: a, b, c"]),
    "feature not in the file": (rows_text(GOOD), ["data.features=[a,zz]"],
                                ["column 'zz'", "no such column (data.features)"]),
    "non-numeric feature": (with_cell(3, 1, "x4"), [],
                            ["data.csv, line 5, column 'b'", "not a number: 'x4'"]),
    "missing feature value": (with_cell(0, 2, ""), [],
                              ["data.csv, line 2, column 'c'", "missing value"]),
    "NaN feature": (with_cell(4, 0, "nan"), [],
                    ["line 6, column 'a'", "'nan' is not a finite number"]),
    "inf feature": (with_cell(5, 1, "-inf"), [], ["line 7, column 'b'", "'-inf' is not a finite"]),
    "overflowing feature": (with_cell(6, 2, "1e999"), [],
                            ["line 8, column 'c'", "'1e999' is not a finite number"]),
    "missing target value": (with_cell(2, 3, ""), [],
                             ["line 4, column 'label'", "missing target value"]),
    "three classes": (with_cell(1, 3, "maybe"), [],
                      ["target column 'label' must hold exactly two distinct values, found 3"]),
    "one class": (rows_text([[i, i, i, "yes"] for i in range(6)]), [],
                  ["target column 'label' holds a single class 'yes'; need two"]),
    "single class in the training split": (single_class_in_train(),
                                           ["data.val_fraction=0.5", "train.seed=0"],
                                           ["training split", "holds a single class"]),
    "empty split": (rows_text(GOOD[:10]), ["data.val_fraction=0.01"],
                    ["data.val_fraction=0.01 of 10 rows gives an empty split", "raise it"]),
    "header only": (rows_text([]), [], ["data.csv: empty data set: no rows below the header"]),
    "short row": (rows_text(GOOD[:3]) + "1,2,yes\n", [],
                  ["data.csv, line 5: row has 3 fields, header has 4"]),
    "long row": (rows_text(GOOD[:3]) + "1,2,3,4,yes\n", [],
                 ["data.csv, line 5: row has 5 fields, header has 4"]),
    "unclosed quote": (rows_text(GOOD[:3]) + '1,"2,3,yes\n4,5,6,no\n', [],
                       ["data.csv, line 5: row has 2 fields, header has 4"]),
    "not UTF-8": (rows_text(GOOD[:4]).replace("yes", "s\xed").encode("latin-1"), [],
                  ["data.csv: not UTF-8 text"]),
    "duplicate column": ("a,a,c,label\n1,2,3,yes\n4,5,6,no\n", [],
                         ["line 1, column 'a': column name appears twice"]),
}


@pytest.mark.parametrize("case", list(DATA))
def test_bad_data_file(case, tmp_path, capsys) -> None:
    text, extra, fragments = DATA[case]
    path = tmp_path / "data.csv"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    run = tmp_path / "run"
    assert_all_in(error_line(csv_train_argv(path, run, *extra), capsys), fragments)
    assert not run.exists()  # data is read before the run folder is made


def test_bom_quotes_and_crlf_load_fine(tmp_path, capsys) -> None:
    # What a spreadsheet exports: a UTF-8 byte-order mark, every field quoted, CRLF line ends.
    rng = np.random.default_rng(1)
    lines = ['"age","city","purchase"']
    for _ in range(40):
        age = int(rng.integers(18, 70))
        label = "jacket" if age + rng.normal(0, 5) > 42 else "cardigan"
        lines.append(f'"{age}","Oslo, NO","{label}"')
    lines[1] = '"42","Oslo, NO","jacket"'  # the quoted number 42 and the quoted label
    path = tmp_path / "export.csv"
    path.write_bytes(("\ufeff" + "\r\n".join(lines) + "\r\n").encode("utf-8"))

    run = tmp_path / "run"
    argv = ["train", DEFAULT, "data.source=csv", f"data.path={path}", "data.target=purchase",
            "data.features=[age]", f"log.run_dir={run}", *QUICK]
    assert cli.main([str(a) for a in argv]) == 0
    state = load_checkpoint(run / "last.pt")
    assert state["feature_names"] == ["age"]  # not "\ufeffage"
    assert state["label_map"] == {"cardigan": 0, "jacket": 1}  # not '"jacket"'
    assert state["preprocessing"]["mean"][0] == pytest.approx(
        np.mean([int(line.split(",")[0].strip('"')) for line in lines[1:]]))

    out = tmp_path / "pred.csv"
    assert cli.main(["predict", str(run / "last.pt"), str(path), "-o", str(out)]) == 0
    capsys.readouterr()
    with open(out, newline="", encoding="utf-8") as f:
        header, first, *_ = list(csv.reader(f))
    assert header == ["age", "city", "purchase", "probability", "prediction"]
    assert first[:3] == ["42", "Oslo, NO", "jacket"]
    assert first[4] in ("jacket", "cardigan") and 0 <= float(first[3]) <= 1


def test_constant_feature_column_trains_with_finite_weights(tmp_path, capsys) -> None:
    rows = [[a, b, 7.25, lab] for a, b, _, lab in labeled_rows(80)]
    path = write_rows(tmp_path / "data.csv", HEADER, rows)
    run = tmp_path / "run"
    assert cli.main([str(a) for a in csv_train_argv(path, run, "train.epochs=3")]) == 0
    state = load_checkpoint(run / "last.pt")
    pre = state["preprocessing"]
    assert pre["mean"][2] == 7.25 and pre["std"][2] == 1.0  # no division by a zero std
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    assert all(math.isfinite(r["train/loss"]) and math.isfinite(r["val/loss"])
               for r in state["history"])
    assert cli.main(["evaluate", str(run / "last.pt"), "--json"]) == 0
    assert '"accuracy"' in capsys.readouterr().out
