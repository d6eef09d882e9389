"""``logreg-torch evaluate`` and ``predict`` on a trained run, run in-process through
``cli.main``: metrics equal to scikit-learn's, predictions equal to the model's probabilities."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import (  # tests/ is on sys.path under pytest
    JACKETS,
    jackets_rows,
    trained_run,  # noqa: F401 (the run_dir fixture)
    write_csv,
)

from logreg_torch import cli
from logreg_torch.checkpoint import load_checkpoint
from logreg_torch.data import read_features_csv
from logreg_torch.train import model_from_checkpoint, predict_proba

pytestmark = pytest.mark.usefixtures("no_figures")

# ----------------------------------------------------------------------------- evaluate


def reference_metrics(checkpoint: Path, rows: list[list[str]], header: list[str],
                      bins: int = 15) -> dict:
    """The nine metrics of the checkpoint's model on CSV rows, computed without logreg_torch:
    standardize with the stored statistics, logits from the stored weights in float32 (the
    model's dtype) by hand, scikit-learn for eight metrics and the expected calibration error
    by its definition: 15 equal-width bins of the predicted probability of class 1, the
    weighted mean of |fraction of positives - mean probability| over the bins."""
    from sklearn import metrics as skm

    state = torch.load(checkpoint, weights_only=True)
    columns = [header.index(name) for name in state["feature_names"]]
    X = np.array([[float(row[c]) for c in columns] for row in rows])
    pre = state["preprocessing"]
    X = (X - np.array(pre["mean"])) / np.array(pre["std"])
    weight, bias = state["model"]["linear.weight"], state["model"]["linear.bias"]
    logits = torch.tensor(X, dtype=torch.float32) @ weight[0] + bias[0]
    p = torch.sigmoid(logits).double().numpy()
    target = header.index("purchase")
    y = np.array([state["label_map"][row[target]] for row in rows], dtype=np.int64)
    labels = (p >= 0.5).astype(np.int64)
    which = np.minimum((p * bins).astype(np.int64), bins - 1)
    ece = sum(abs(y[which == b].mean() - p[which == b].mean()) * (which == b).mean()
              for b in range(bins) if (which == b).any())
    return {"log_loss": skm.log_loss(y, p), "accuracy": skm.accuracy_score(y, labels),
            "precision": skm.precision_score(y, labels), "recall": skm.recall_score(y, labels),
            "f1": skm.f1_score(y, labels), "roc_auc": skm.roc_auc_score(y, p),
            "average_precision": skm.average_precision_score(y, p),
            "brier": skm.brier_score_loss(y, p), "ece": ece, "p": p}


def test_evaluate_metrics_equal_scikit_learn(run_dir, capsys) -> None:
    # All 1,000 rows of the bundled file: evaluate --data on a CSV, against a reference that
    # shares no code with logreg_torch (see reference_metrics).
    header, rows = jackets_rows(1000)
    assert cli.main(["evaluate", str(run_dir / "last.pt"), "--data", str(JACKETS),
                     "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n"] == 1000
    expected = reference_metrics(run_dir / "last.pt", rows, header)
    # No probability within rounding of the 0.5 threshold or of a bin edge, so the label
    # metrics and the ECE bins cannot flip on float32 rounding and are compared tightly.
    p = expected.pop("p")
    assert np.abs(p - 0.5).min() > 1e-5 and np.abs(p * 15 - np.round(p * 15)).min() > 1e-5
    assert set(report) == {"data", "n", "loss", *expected}
    for name, value in expected.items():
        assert report[name] == pytest.approx(value, rel=1e-6, abs=1e-9), name
    assert report["loss"] == pytest.approx(expected["log_loss"], rel=1e-6)  # no penalty here
    # Not a degenerate model: the comparison covers a real spread of values.
    assert 0.6 < expected["accuracy"] < 1 and expected["ece"] > 0
    # The ECE check sees the bin count: with 10 bins it would fail.
    ten = reference_metrics(run_dir / "last.pt", rows, header, bins=10)["ece"]
    assert report["ece"] != pytest.approx(ten, rel=1e-3)


def test_evaluate_prints_a_table_of_the_json_values(run_dir, capsys) -> None:
    assert cli.main(["evaluate", str(run_dir / "last.pt"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert cli.main(["evaluate", str(run_dir / "last.pt")]) == 0
    out = capsys.readouterr().out
    assert "on val split (200 rows)" in out
    rows = dict(line.split() for line in out.splitlines()[3:])
    assert rows == {k: f"{v:.4f}" for k, v in report.items() if k not in ("data", "n")}


def test_evaluate_json_on_the_val_split_equals_scikit_learn(run_dir, capsys) -> None:
    # The default split: the val rows are the ones the run held out (the split is seeded
    # by train.seed through data.split_indices; 200 of the 1,000 rows).
    from logreg_torch.data import split_indices

    assert cli.main(["evaluate", str(run_dir / "last.pt"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["data"] == "val split" and report["n"] == 200
    header, rows = jackets_rows(1000)
    _, val, _ = split_indices(1000, 0.2, 0.0, 0)
    expected = reference_metrics(run_dir / "last.pt", [rows[i] for i in val], header)
    expected.pop("p")
    for name, value in expected.items():
        assert report[name] == pytest.approx(value, rel=1e-6, abs=1e-9), name
    # And the training history's last epoch reports the same numbers for the same split.
    last = load_checkpoint(run_dir / "last.pt")["history"][-1]
    for name in expected:
        assert last[f"val/{name}"] == pytest.approx(report[name], rel=1e-6, abs=1e-9), name


def test_evaluate_on_a_csv(run_dir, tmp_path, capsys) -> None:
    header, rows = jackets_rows(50)
    data = write_csv(tmp_path / "some.csv", header, rows)
    assert cli.main(["evaluate", str(run_dir / "last.pt"), "--data", str(data), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["data"] == str(data) and report["n"] == 50

    # Accuracy by hand from predict's probabilities on the same rows.
    state = load_checkpoint(run_dir / "last.pt")
    X, _ = read_features_csv(data, state["feature_names"], state["preprocessing"])
    probs = predict_proba(model_from_checkpoint(state), torch.tensor(X, dtype=torch.float32))
    t = header.index("purchase")
    correct = sum((p >= 0.5) == (row[t] == "jacket") for p, row in zip(probs.tolist(), rows,
                                                                      strict=True))
    assert report["accuracy"] == pytest.approx(correct / 50)


# ----------------------------------------------------------------------------- predict


def test_predict_writes_probabilities_and_original_labels(run_dir, tmp_path, capsys) -> None:
    header, rows = jackets_rows(40)
    features = [h for h in header if h != "purchase"]
    # Columns in another order, no target: predict selects the model's columns by name.
    reordered = list(reversed(features))
    data = write_csv(tmp_path / "input.csv", reordered,
                     [[row[header.index(c)] for c in reordered] for row in rows])
    out = tmp_path / "out" / "pred.csv"
    assert cli.main(["predict", str(run_dir / "last.pt"), str(data), "--output", str(out)]) == 0
    assert f"wrote 40 predictions to {out}" in capsys.readouterr().out

    with open(out, newline="") as f:
        written = list(csv.DictReader(f))
    assert len(written) == 40
    assert list(written[0]) == [*reordered, "probability", "prediction"]
    state = load_checkpoint(run_dir / "last.pt")
    X, _ = read_features_csv(data, state["feature_names"], state["preprocessing"])
    probs = predict_proba(model_from_checkpoint(state), torch.tensor(X, dtype=torch.float32))
    for row, p in zip(written, probs.tolist(), strict=True):
        assert float(row["probability"]) == pytest.approx(p, abs=1e-6)
        assert row["prediction"] == ("jacket" if p >= 0.5 else "cardigan")
    assert {row["prediction"] for row in written} == {"jacket", "cardigan"}
    # The input's own columns pass through unchanged.
    assert [row[reordered[0]] for row in written] == [r[header.index(reordered[0])]
                                                     for r in rows]


def test_predict_threshold(run_dir, tmp_path, capsys) -> None:
    out = tmp_path / "all.csv"
    assert cli.main(["predict", str(run_dir / "last.pt"), str(JACKETS), "-o", str(out),
                     "--threshold", "0"]) == 0
    with open(out, newline="") as f:
        assert {row["prediction"] for row in csv.DictReader(f)} == {"jacket"}
