"""What the test_hardening_*.py modules share: the command line run to its one error line,
CSV files of labeled rows and the train command on them."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from logreg_torch import cli

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO / "configs" / "default.yaml"
QUICK = ("train.epochs=1", "log.histogram_every=0", "--quiet")


def error_line(argv: list[str], capsys) -> str:
    """Run the CLI; it must exit 2 with one ``error:`` line on stderr and nothing else."""
    capsys.readouterr()
    assert cli.main([str(a) for a in argv]) == 2
    out, err = capsys.readouterr()
    lines = err.splitlines()  # also splits on \r, \x1c, \u2028, ...: one line means one line
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err, err
    assert out == "", out
    return lines[0]


def assert_all_in(line: str, fragments: list[str]) -> None:
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"


def write_rows(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def labeled_rows(n: int = 60, seed: int = 0) -> list[list[object]]:
    """Rows a, b, c, label: label is "yes" when a + b is large (learnable, both classes)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3)).round(3)
    labels = np.where(X[:, 0] + X[:, 1] > 0, "yes", "no")
    labels[:2] = ["yes", "no"]  # both classes, whatever the draw
    return [[*map(float, x), lab] for x, lab in zip(X, labels, strict=True)]


HEADER = ["a", "b", "c", "label"]


def csv_train_argv(data: Path, run: Path, *extra: str) -> list[str]:
    return ["train", DEFAULT, "data.source=csv", f"data.path={data}", "data.target=label",
            f"log.run_dir={run}", *QUICK, *extra]
