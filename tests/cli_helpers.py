"""Shared by the ``logreg-torch`` command tests (test_cli.py, test_cli_evaluate_predict.py,
test_cli_summary.py): paths, the trained run they read, and small file helpers."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from logreg_torch import cli
from logreg_torch.data import DATASETS_DIR

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO / "configs" / "default.yaml"
JACKETS = DATASETS_DIR / "jackets.csv"
# On the CPU on every machine: evaluate (a CPU command) is held to the training history's
# validation metrics at 1e-9, which a GPU's float32 sums do not meet.
FAST = ("train.epochs=3", "log.histogram_every=0", "train.device=cpu")


# Imported by name into each test module that uses it: run_dir there, one run per module.
@pytest.fixture(scope="module", name="run_dir")
def trained_run(tmp_path_factory) -> Path:
    """One jackets run made by ``train``: 3 epochs, val split 0.2 (200 rows)."""
    path = tmp_path_factory.mktemp("cli") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("logreg_torch.tracking.figures_available", lambda: False)
        assert cli.main(["train", str(DEFAULT), *FAST, f"log.run_dir={path}", "--quiet"]) == 0
    return path


def one_error_line(capsys) -> str:
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err
    return lines[0]


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def jackets_rows(n: int) -> tuple[list[str], list[list[str]]]:
    with open(JACKETS, newline="") as f:
        header, *rows = list(csv.reader(f))
    return header, rows[:n]
