"""``logreg-torch`` commands, run in-process through ``cli.main`` (and the entry points once each
in a subprocess). User errors: exit code 2, one ``error:`` line on stderr, no traceback."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import logreg_torch.fit as fit_module
from logreg_torch import cli
from logreg_torch.checkpoint import load_checkpoint
from logreg_torch.config import load_config
from logreg_torch.data import DATASETS_DIR, read_features_csv
from logreg_torch.train import model_from_checkpoint, predict_proba

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO / "configs" / "default.yaml"
JACKETS = DATASETS_DIR / "jackets.csv"
# On the CPU on every machine: evaluate (a CPU command) is held to the training history's
# validation metrics at 1e-9, which a GPU's float32 sums do not meet.
FAST = ("train.epochs=3", "log.histogram_every=0", "train.device=cpu")


@pytest.fixture(autouse=True)
def no_figures(monkeypatch) -> None:
    # End-of-run matplotlib figures are most of a tiny run's time; tests/test_tracking_run.py
    # covers them.
    monkeypatch.setattr("logreg_torch.tracking.figures_available", lambda: False)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
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


# ----------------------------------------------------------------------------- train


def test_train_with_overrides(run_dir) -> None:
    state = load_checkpoint(run_dir / "last.pt")
    assert state["epoch"] == 3
    assert state["config"]["train"]["epochs"] == 3
    assert load_config(run_dir / "config.yaml") == load_config(
        DEFAULT, [*FAST, f"log.run_dir={run_dir}"])


def test_quiet_still_says_where_the_run_is_and_how_it_ended(tmp_path, capsys) -> None:
    run = tmp_path / "runs" / "q"
    assert cli.main(["train", str(DEFAULT), "--quiet", *FAST, f"log.run_dir={run}"]) == 0
    out, err = capsys.readouterr()
    assert err == ""  # no progress bar
    ending = load_checkpoint(run / "last.pt")["ending"]["message"]
    # The TensorBoard hint names the folder the run is in, whatever log.run_dir was.
    assert out.splitlines() == [f"run folder: {run} (checkpoints last.pt, best.pt)",
                                f"see the curves with: tensorboard --logdir {run.parent}",
                                ending]
    assert ending == "finished 3 epochs; best epoch 3 (best.pt)"


def test_evaluate_a_streamed_run_on_its_validation_rows(tmp_path, capsys) -> None:
    rng = np.random.default_rng(0)
    data = tmp_path / "shards"
    data.mkdir()
    for i in range(2):  # shards: only streaming reads them
        X = rng.standard_normal((500, 3)).astype(np.float32)
        np.save(data / f"X-{i:05d}.npy", X)
        np.save(data / f"y-{i:05d}.npy", (X[:, 0] > 0).astype(np.float32))
    run = tmp_path / "run"
    assert cli.main(["train", str(DEFAULT), "data.source=npy", f"data.path={data}",
                     "data.streaming=true", *FAST, f"log.run_dir={run}", "--quiet"]) == 0
    capsys.readouterr()
    assert cli.main(["evaluate", str(run), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["data"] == "val split" and report["n"] == 200
    val_loss = load_checkpoint(run / "best.pt")["history"][-1]["val/loss"]
    assert report["loss"] == pytest.approx(val_loss, rel=1e-6)


def test_version_names_the_package_and_needs_no_torch() -> None:
    project = (REPO / "pyproject.toml").read_text()
    version = project.split('version = "', 1)[1].split('"', 1)[0]
    code = ("import sys\nfrom logreg_torch import cli\n"
            "print(cli.main(['--version']), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.splitlines() == [f"logreg-torch {version}", "0 False"], out


def test_train_overrides_after_the_flag_and_a_summary(tmp_path, capsys) -> None:
    code = cli.main(["train", str(DEFAULT), "--quiet", "train.epochs=1",
                     f"log.run_dir={tmp_path / 'q'}", "log.histogram_every=0"])
    assert code == 0
    assert load_checkpoint(tmp_path / "q" / "last.pt")["epoch"] == 1
    out, err = capsys.readouterr()  # --quiet: no tables, no progress bar
    assert err == "" and "trained" not in out and out.count("\n") == 3, out

    assert cli.main(["train", str(DEFAULT), "train.epochs=1", f"log.run_dir={tmp_path / 'v'}",
                     "log.histogram_every=0"]) == 0
    out, err = capsys.readouterr()
    assert "train: 100%" in err  # the progress bar
    assert "trained 1 epoch(s)" in out
    assert "validation metrics:" in out and "accuracy" in out
    assert f"run folder: {tmp_path / 'v'}" in out
    assert out.splitlines()[-1] == "finished 1 epoch; best epoch 1 (best.pt)"  # how it ended


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


# ----------------------------------------------------------------------------- config, explain


def test_config_prints_the_resolved_yaml(capsys) -> None:
    assert cli.main(["config", str(DEFAULT), "optim.lr=0.25", "model.hidden=[4,2]"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["optim"]["lr"] == 0.25
    assert printed["model"]["hidden"] == [4, 2]
    assert printed["train"]["epochs"] == 20  # from the file
    assert printed["loss"]["l2"] == 0.0  # a default the file does not set
    import dataclasses

    assert printed == dataclasses.asdict(load_config(DEFAULT, ["optim.lr=0.25",
                                                               "model.hidden=[4,2]"]))


def test_explain(capsys) -> None:
    assert cli.main(["explain"]) == 0
    assert "Log loss, step by step" in capsys.readouterr().out
    assert cli.main(["explain", "--probs", "0.9,0.2", "--labels", "1,0"]) == 0
    out = capsys.readouterr().out
    expected = -(math.log(0.9) + math.log(0.8)) / 2
    assert f"{expected:.6f}" in out


# ----------------------------------------------------------------------------- user errors


@pytest.fixture
def files(run_dir, tmp_path) -> dict[str, Path]:
    corrupted = tmp_path / "corrupted.pt"
    corrupted.write_bytes(os.urandom(4096))
    header, rows = jackets_rows(5)
    lacking = write_csv(tmp_path / "lacking.csv", header[1:], [row[1:] for row in rows])
    return {"ckpt": run_dir / "last.pt", "corrupted": corrupted, "lacking": lacking,
            "folder": tmp_path, "missing": tmp_path / "missing"}


ERRORS = {
    "unknown config key": (["train", "{default}", "optim.lrr=0.1"], "unknown key 'optim.lrr'"),
    "bad override": (["train", "{default}", "optim.lr"], "override 'optim.lr' has no '='"),
    "bad override value": (["train", "{default}", "optim.lr=abc"], "optim.lr must be a number"),
    "missing config": (["train", "{missing}.yaml"], "not found"),
    "missing data file": (["train", "{default}", "data.source=csv", "data.path={missing}.csv",
                           "data.target=y"], "file not found"),
    "missing checkpoint": (["evaluate", "{missing}.pt"], "does not exist"),
    "folder as checkpoint": (["evaluate", "{folder}"], "is a folder"),
    "corrupted checkpoint": (["evaluate", "{corrupted}"], "corrupted"),
    "missing --data": (["evaluate", "{ckpt}", "--data", "{missing}.csv"], "file not found"),
    "predict lacking a column": (["predict", "{ckpt}", "{lacking}", "-o", "{folder}/o.csv"],
                                 "missing column(s) 'age'"),
    "threshold 2": (["predict", "{ckpt}", str(JACKETS), "-o", "{folder}/o.csv", "--threshold",
                     "2"], "--threshold must be in [0, 1]"),
    "explain bad probs": (["explain", "--probs", "0.5,x", "--labels", "1,0"], "not a number"),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_user_errors_are_one_line_and_exit_2(case, files, tmp_path, monkeypatch,
                                             capsys) -> None:
    monkeypatch.chdir(tmp_path)  # a train that wrongly got going would write here, not in the repo
    argv, expected = ERRORS[case]
    argv = [a.format(default=DEFAULT, **files) for a in argv]
    assert cli.main(argv) == 2
    line = one_error_line(capsys)
    assert expected in line
    assert not (tmp_path / "runs").exists()
    assert not (files["folder"] / "o.csv").exists()


def test_corrupted_checkpoint_message_does_not_suggest_unsafe_loading(files, capsys) -> None:
    assert cli.main(["evaluate", str(files["corrupted"])]) == 2
    line = one_error_line(capsys)
    assert str(files["corrupted"]) in line
    assert "weights_only" not in line


# ----------------------------------------------------------------------------- Ctrl-C


def test_ctrl_c_returns_130_and_says_how_to_resume(tmp_path, monkeypatch, capsys) -> None:
    real, calls = fit_module.train_one_epoch, {"n": 0}

    def train_one_epoch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(fit_module, "train_one_epoch", train_one_epoch)
    run = tmp_path / "run"
    argv = ["train", str(DEFAULT), "train.epochs=5", f"log.run_dir={run}", "--quiet"]
    assert cli.main(argv) == 130
    err = capsys.readouterr().err
    assert f"train.resume={run / 'last.pt'}" in err and "Traceback" not in err
    assert load_checkpoint(run / "last.pt")["epoch"] == 2

    # The printed command finishes the run.
    monkeypatch.undo()
    command = err.split("resume with: ", 1)[1].split()
    assert command[:2] == ["logreg-torch", "train"]
    assert cli.main([*command[1:], "--quiet"]) == 0
    assert load_checkpoint(run / "last.pt")["epoch"] == 5


# ----------------------------------------------------------------------------- entry points


def test_console_script_help() -> None:
    script = Path(sys.executable).with_name("logreg-torch")
    # Where the project is used from PYTHONPATH, not installed (a GPU machine's check, say),
    # there is no script: the entry point pyproject.toml names is called as the script would.
    entry = ("import sys; from logreg_torch.cli import console_main; "
             "console_main(sys.argv[1:])")
    command = [str(script)] if script.exists() else [sys.executable, "-c", entry]
    pyproject = (REPO / "pyproject.toml").read_text()
    assert 'logreg-torch = "logreg_torch.cli:console_main"' in pyproject
    done = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    for command in ("train", "evaluate", "predict", "config", "explain"):
        assert command in done.stdout


def test_python_dash_m_config() -> None:
    done = subprocess.run([sys.executable, "-m", "logreg_torch", "config",
                           "configs/default.yaml"], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert yaml.safe_load(done.stdout)["log"]["name"] == "default"


# ----------------------------------------------------------------------------- summary


@pytest.fixture(scope="module")
def newton_run(tmp_path_factory) -> Path:
    """configs/newton.yaml: three breast_cancer features, Newton in fp64, every row."""
    path = tmp_path_factory.mktemp("newton") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("logreg_torch.tracking.figures_available", lambda: False)
        assert cli.main(["train", str(REPO / "configs" / "newton.yaml"), f"log.run_dir={path}",
                         "--quiet"]) == 0
    return path


def test_summary_json_matches_statsmodels(newton_run, capsys) -> None:
    sm = pytest.importorskip("statsmodels.api")
    import numpy as np

    assert cli.main(["summary", str(newton_run), "--json", "--alpha", "0.1"]) == 0
    data = json.loads(capsys.readouterr().out)
    rows = data["coefficients"]
    names = ["intercept", "mean_radius", "mean_texture", "mean_smoothness"]
    assert [r["name"] for r in rows] == names
    cfg = load_config(REPO / "configs" / "newton.yaml")
    table = np.genfromtxt(DATASETS_DIR / "breast_cancer.csv", delimiter=",", names=True,
                          dtype=None, encoding="utf-8")
    X = np.column_stack([table[n] for n in names[1:]])
    y = (table["diagnosis"] == "malignant").astype(float)
    ref = sm.Logit(y, sm.add_constant(X)).fit(disp=0, tol=1e-12)
    np.testing.assert_allclose([r["coef"] for r in rows], ref.params, rtol=1e-6)
    np.testing.assert_allclose([r["std_err"] for r in rows], ref.bse, rtol=1e-4)
    np.testing.assert_allclose([r["p_value"] for r in rows], ref.pvalues, rtol=1e-4)
    np.testing.assert_allclose([r["ci_low"] for r in rows], ref.conf_int(0.1)[:, 0], rtol=1e-4)
    assert data["n_obs"] == len(y) and data["log_likelihood"] == pytest.approx(ref.llf)
    assert data["ending"]["kind"] == "converged" and cfg.optim.name == "newton"
    assert data["alpha"] == 0.1 and data["penalized"] is False


def test_summary_of_a_checkpoint_prints_the_table(newton_run, capsys) -> None:
    assert cli.main(["summary", str(newton_run / "last.pt")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("logistic regression on the original feature scale; n_obs 569")
    assert out[1].split()[:3] == ["coef", "std_err", "z"]
    assert out[2].split()[0] == "intercept" and "nan" not in " ".join(out)
    assert out[-1].startswith("fit: converged after")


def test_summary_bad_input_is_one_line_exit_2(run_dir, tmp_path, capsys) -> None:
    mlp = tmp_path / "mlp"
    assert cli.main(["train", str(DEFAULT), "model.name=mlp", "model.hidden=[4]",
                     "train.epochs=1", f"log.run_dir={mlp}", "log.histogram_every=0",
                     "--quiet"]) == 0
    capsys.readouterr()  # the run's folder and ending (--quiet still says where it is)
    assert cli.main(["summary", str(mlp)]) == 2
    assert "holds an mlp model" in one_error_line(capsys)
    # breast_cancer on all 30 features, 80% of the rows, no penalty: the classes separate
    sep = tmp_path / "sep"
    # on the CPU on every machine: Newton on separable data walks to the edge of float64
    assert cli.main(["train", str(DEFAULT), "data.source=breast_cancer", "optim.name=newton",
                     "train.batch_size=null", "train.epochs=1", "train.precision=fp64",
                     f"log.run_dir={sep}", "log.histogram_every=0", "train.device=cpu",
                     "--quiet"]) == 0
    capsys.readouterr()
    assert cli.main(["summary", str(sep)]) == 2
    line = one_error_line(capsys)
    assert line.startswith("error: perfect separation: coefficient of '") and "diverges" in line
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["summary", str(empty)]) == 2
    assert "is a folder without best.pt or last.pt" in one_error_line(capsys)
    assert cli.main(["summary", str(run_dir), "--alpha", "2"]) == 2
    assert "--alpha" in one_error_line(capsys)


def test_readme_summary_example_prints_what_the_readme_shows(tmp_path, monkeypatch,
                                                             capsys) -> None:
    text = (REPO / "README.md").read_text()
    section = text[text.index("### Coefficients and standard errors"):]
    commands = section[section.index("```bash") + 7:].split("```")[0].strip().splitlines()
    shown = section[section.index("```text") + 7:].split("```")[0].strip("\n")
    assert commands[0].startswith("logreg-torch train configs/newton.yaml")
    assert commands[1].startswith("logreg-torch summary runs/newton")
    monkeypatch.chdir(tmp_path)
    # The README shows the CPU's output: its last line holds max|grad| at float64's noise
    # floor, which a GPU's sums round otherwise. The commands run as written, on the CPU.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "newton.yaml").write_text(
        (REPO / "configs" / "newton.yaml").read_text())
    for command in commands:
        assert cli.main(command.split()[1:]) == 0
    out = capsys.readouterr().out
    assert out.strip("\n").endswith(shown)


def test_summary_says_when_best_pt_is_not_the_final_epoch(tmp_path, capsys) -> None:
    run = tmp_path / "r"
    assert cli.main(["train", str(DEFAULT), "train.epochs=4", "optim.lr=0.5",
                     f"log.run_dir={run}", "log.histogram_every=0", "--quiet"]) == 0
    best, last = load_checkpoint(run / "best.pt"), load_checkpoint(run / "last.pt")
    assert cli.main(["summary", str(run)]) == 0
    out = capsys.readouterr().out
    said = f"best.pt holds epoch {best['epoch']}; the fit ended at epoch 4" in out
    assert best["ending"]["holds_epoch"] == best["epoch"]  # its ending says which weights
    assert said == (best["epoch"] != last["epoch"])
    assert "note: the fit did not report convergence" in out  # Adam: "finished 4 epochs"
