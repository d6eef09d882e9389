"""data/rows.py through the CLI: ``evaluate --data`` and ``predict`` read every source ``train``
reads, and give the same numbers for the same rows whatever the format."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from logreg_torch import cli
from logreg_torch.data import DATASETS_DIR

pytestmark = pytest.mark.usefixtures("no_figures")

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO / "configs" / "default.yaml"


@pytest.fixture(scope="module")
def npy_run(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    """A model trained on an npy folder, and the same 60 rows in every format."""
    root = tmp_path_factory.mktemp("rows")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 3))
    y = (X[:, 0] + 0.5 * rng.standard_normal(60) > 0).astype(np.float64)
    folder = root / "folder"
    folder.mkdir()
    np.save(folder / "X.npy", X)
    np.save(folder / "y.npy", y)
    shards = root / "shards"
    shards.mkdir()
    for i, rows in enumerate((slice(0, 25), slice(25, 60))):
        np.save(shards / f"X-{i:05d}.npy", X[rows])
        np.save(shards / f"y-{i:05d}.npy", y[rows])
    np.savez(root / "data.npz", X=X, y=y)
    with open(root / "data.csv", "w", newline="") as f:  # columns shuffled: matched by name
        writer = csv.writer(f)
        writer.writerow(["target", "x2", "x0", "x1"])
        writer.writerows([[int(t), *row[[2, 0, 1]]] for row, t in zip(X, y, strict=True)])
    run = root / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("logreg_torch.tracking.figures_available", lambda: False)
        assert cli.main(["train", str(DEFAULT), "data.source=npy", f"data.path={folder}",
                         "train.epochs=2", "log.histogram_every=0", f"log.run_dir={run}",
                         "--quiet"]) == 0
    sources = {"folder": folder, "X.npy": folder / "X.npy", "npz": root / "data.npz",
               "shards": shards, "csv": root / "data.csv"}
    return run, sources


FORMATS = ("folder", "X.npy", "npz", "shards", "csv")


def _evaluate(run: Path, data: Path, capsys) -> dict:
    capsys.readouterr()
    assert cli.main(["evaluate", str(run), "--data", str(data), "--json"]) == 0
    out, err = capsys.readouterr()
    assert err.startswith(f"using {run / 'best.pt'}")  # a run folder: says which checkpoint
    return json.loads(out)


def test_evaluate_reads_every_format_alike(npy_run, capsys) -> None:
    run, sources = npy_run
    results = {name: _evaluate(run, sources[name], capsys) for name in FORMATS}
    reference = results["folder"]
    assert reference["n"] == 60
    for name, result in results.items():
        for key in ("n", "loss", "accuracy", "roc_auc"):
            assert result[key] == pytest.approx(reference[key], rel=1e-6), (name, key)


def test_predict_reads_every_format_alike_and_writes_npy(npy_run, tmp_path, capsys) -> None:
    run, sources = npy_run
    probs = {}
    for name in FORMATS:
        out = tmp_path / f"{name}.npy"
        assert cli.main(["predict", str(run / "last.pt"), str(sources[name]), "-o",
                         str(out)]) == 0
        probs[name] = np.load(out)
    assert probs["folder"].shape == (60,)
    assert ((probs["folder"] > 0) & (probs["folder"] < 1)).all()
    for name in FORMATS:
        np.testing.assert_allclose(probs[name], probs["folder"], rtol=1e-6, err_msg=name)
    # CSV output from arrays: no columns to echo, the probability and the label.
    out = tmp_path / "p.csv"
    assert cli.main(["predict", str(run), str(sources["npz"]), "-o", str(out)]) == 0
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["probability", "prediction"] and len(rows) == 61
    assert float(rows[1][0]) == pytest.approx(probs["folder"][0], abs=1e-6)


def test_bundled_name_is_the_bundled_csv(tmp_path, capsys) -> None:
    run = tmp_path / "run"
    assert cli.main(["train", str(DEFAULT), "train.epochs=1", "log.histogram_every=0",
                     f"log.run_dir={run}", "--quiet"]) == 0
    by_name = _evaluate(run, Path("jackets"), capsys)
    by_path = _evaluate(run, DATASETS_DIR / "jackets.csv", capsys)
    assert by_name == {**by_path, "data": "jackets"}
    assert by_name["n"] == 1000


def test_arrays_for_a_model_with_named_columns_is_one_line(npy_run, tmp_path, capsys) -> None:
    _, sources = npy_run
    run = tmp_path / "run"
    assert cli.main(["train", str(DEFAULT), "train.epochs=1", "log.histogram_every=0",
                     f"log.run_dir={run}", "--quiet"]) == 0
    capsys.readouterr()
    assert cli.main(["predict", str(run), str(sources["folder"]), "-o",
                     str(tmp_path / "p.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") and "columns are named x0..x2" in err, err


def test_shards_without_streaming_suggest_it(npy_run, tmp_path, capsys) -> None:
    _, sources = npy_run
    capsys.readouterr()
    assert cli.main(["train", str(DEFAULT), "data.source=npy", f"data.path={sources['shards']}",
                     f"log.run_dir={tmp_path / 'r'}", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "data.streaming=true" in err and len(err.strip().splitlines()) == 1, err


def test_npy_config_says_how_to_make_its_data(tmp_path, monkeypatch, capsys) -> None:
    import subprocess
    import sys

    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    argv = ["train", str(REPO / "configs" / "npy.yaml"), "train.epochs=1",
            "log.histogram_every=0", "--quiet"]
    assert cli.main(argv) == 2
    line = capsys.readouterr().err.strip()
    hint = line.split("make one with: ", 1)[1]
    assert hint.startswith("python scripts/make_dataset.py data/synthetic "), line
    # The hint, run as printed (from the repository's scripts), makes data the config trains on.
    words = hint.split()
    subprocess.run([sys.executable, str(REPO / words[1]), *words[2:]], check=True,
                   capture_output=True, timeout=60)
    assert cli.main(argv) == 0


@pytest.mark.parametrize("overrides, note", [
    ([], None),
    (["loss.pos_weight=2"], "loss.pos_weight=2.0"),
    (["loss.label_smoothing=0.1"], "loss.label_smoothing=0.1 (targets 0.05 and 0.95)"),
])
def test_tables_say_why_loss_and_log_loss_differ(overrides, note, tmp_path, capsys) -> None:
    run = tmp_path / "run"
    assert cli.main(["train", str(DEFAULT), "train.epochs=2", "log.histogram_every=0",
                     *overrides, f"log.run_dir={run}"]) == 0
    out = capsys.readouterr().out
    assert cli.main(["evaluate", str(run / "best.pt")]) == 0
    table = capsys.readouterr().out
    for text in (out, table):
        if note is None:
            assert "note:" not in text
        else:
            assert note in text and "log_loss is the plain log loss" in text, text
