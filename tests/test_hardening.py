"""Bad input, end to end through ``logreg_torch.cli.main``: every mistake ends with exit code 2
and exactly one ``error:`` line on stderr (what, where, how to fix), never a traceback; odd but
valid input (a BOM, quoted fields, a constant column) trains.

The loader-level checks live beside their modules (test_config.py, test_data_sources.py,
test_checkpoint.py, test_loss_bad_input.py, test_explain.py); this file proves that the same
mistakes reach a user of the command line as one clear line, and adds the cases those files lack.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings

# The random YAML documents and override strings of the loader's own property test.
from test_config import documents, overrides  # tests/ is on sys.path under pytest

from logreg_torch import cli
from logreg_torch.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from logreg_torch.config import Config, ConfigError, LogConfig, LossConfig, OptimConfig, load_config
from logreg_torch.data import split_indices
from logreg_torch.train import fit, model_from_checkpoint

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO / "configs" / "default.yaml"
QUICK = ("train.epochs=1", "log.histogram_every=0", "--quiet")


@pytest.fixture(autouse=True)
def no_figures(monkeypatch) -> None:
    # End-of-run matplotlib figures are most of a tiny run's time (tests/test_tracking_run.py).
    monkeypatch.setattr("logreg_torch.tracking.figures_available", lambda: False)


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


@pytest.fixture(scope="module")
def csv_run(tmp_path_factory) -> Path:
    """A model trained by ``train`` on a CSV with feature columns a, b, c (2 epochs)."""
    root = tmp_path_factory.mktemp("csv_run")
    data = write_rows(root / "train.csv", HEADER, labeled_rows())
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("logreg_torch.tracking.figures_available", lambda: False)
        assert cli.main([str(a) for a in csv_train_argv(data, root / "run",
                                                         "train.epochs=2")]) == 0
    return root / "run"


# ============================================================================ configs

CONFIG_FILES = {
    # unknown keys, at every level
    "unknown section": ("optimizer:\n  lr: 0.1\n",
                        ["unknown key 'optimizer'", "x.yaml:1", "did you mean 'optim'"]),
    "unknown key in a section": ("train:\n  epochs: 3\n  epoks: 4\n",
                                 ["unknown key 'train.epoks'", "x.yaml:3", "'train.epochs'"]),
    "keys below a leaf": ("optim:\n  lr:\n    value: 0.1\n", ["optim.lr", "a number"]),
    # wrong types
    "text for an int": ("train:\n  epochs: ten\n", ["train.epochs", "an integer", "x.yaml:2"]),
    "text for a bool": ("data:\n  standardize: maybe\n", ["data.standardize", "true or false"]),
    "int for a list": ("model:\n  hidden: 64\n", ["model.hidden", "a list of integers"]),
    "list for a float": ("optim:\n  lr: [0.1]\n", ["optim.lr", "a number"]),
    # out of range
    "negative lr": ("optim:\n  lr: -1\n", ["optim.lr", "> 0", "x.yaml:2"]),
    "zero epochs": ("train:\n  epochs: 0\n", ["train.epochs", ">= 1", "x.yaml:2"]),
    "label_smoothing 1.0": ("loss:\n  label_smoothing: 1.0\n",
                            ["loss.label_smoothing", "in [0, 1)", "got 1.0", "x.yaml:2"]),
    # empty, not YAML, not a mapping
    "empty file": ("", ["x.yaml", "is empty", "pass no file"]),
    "comments only": ("# everything commented out\n", ["x.yaml", "is empty"]),
    "YAML syntax": ("optim: {lr: 0.1\n", ["invalid YAML in", "x.yaml:", "fix the syntax"]),
    "a CSV given as the config": ("a,b,label\n1,2,yes\n",
                                  ["x.yaml holds the value", "must be a mapping of sections"]),
    "binary file": (b"\x89PNG\r\n\x1a\n\x00\x00\xff", ["x.yaml", "not UTF-8"]),
    "a list at the root": ("- optim\n- train\n", ["x.yaml holds a list", "'optim:'"]),
    "a list for a section": ("train: [1, 2]\n", ["section 'train'", "x.yaml:1", "mapping of keys"]),
}


@pytest.mark.parametrize("case", list(CONFIG_FILES))
def test_bad_config_file(case, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)  # a train that wrongly got going would write runs/ here
    text, fragments = CONFIG_FILES[case]
    path = tmp_path / "x.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    assert_all_in(error_line(["train", path, "--quiet"], capsys), fragments)
    assert not (tmp_path / "runs").exists()


BAD_OVERRIDES = {
    "unknown section": (["foo=1"], ["unknown key 'foo'", "override 'foo=1'"]),
    "a key below a leaf": (["optim.lr.x=1"], ["optim.lr", "a number"]),
    "wrong type": (["train.epochs=ten"], ["train.epochs", "an integer",
                                          "override 'train.epochs=ten'"]),
    "out of range": (["data.val_fraction=1"], ["data.val_fraction", "[0, 1)"]),
    "unknown choice": (["train.device=gpu"], ["train.device", "auto, cpu, cuda, cuda:N or mps"]),
    "negative pos_weight": (["loss.pos_weight=-2"], ["loss.pos_weight", "positive number"]),
    "negative label_smoothing": (["loss.label_smoothing=-0.1"],
                                 ["loss.label_smoothing", "[0, 1)"]),
    "empty key": (["=0.1"], ["empty key", "optim.lr=0.1"]),
    "double dot": (["optim..lr=1"], ["not a dotted key"]),
    "indexing": (["model.hidden[0]=3"], ["not a dotted key", "model.hidden=[32,16]"]),
    "unclosed list": (["optim.lr=[0.1,"], ["cannot parse", "quote strings"]),
    "spaces around =": (["optim.lr", "=", "0.1"], ["override 'optim.lr' has no '='"]),
    "dashes": (["--optim.lr=0.1"], ["'--optim.lr=0.1'", "without dashes", "e.g. optim.lr=0.1"]),
}


@pytest.mark.parametrize("flag_first", [False, True], ids=["overrides-first", "flag-first"])
@pytest.mark.parametrize("case", list(BAD_OVERRIDES))
def test_bad_override(case, flag_first, tmp_path, monkeypatch, capsys) -> None:
    # Overrides after a flag reach main() as argparse's leftovers: the same one line there.
    monkeypatch.chdir(tmp_path)
    argv, fragments = BAD_OVERRIDES[case]
    argv = ["--quiet", *argv] if flag_first else [*argv, "--quiet"]
    assert_all_in(error_line(["train", DEFAULT, *argv], capsys), fragments)
    assert not (tmp_path / "runs").exists()


@settings(max_examples=80, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(document=documents,
       overrides=overrides.filter(lambda items: not any(o.startswith("-") for o in items)))
def test_cli_config_on_any_input_prints_a_config_or_one_error_line(tmp_path, capsys, document,
                                                                   overrides) -> None:
    # (Arguments that start with '-' belong to argparse; the dashed override is tested above.)
    path = tmp_path / "x.yaml"
    path.write_text(document, encoding="utf-8")
    capsys.readouterr()
    code = cli.main(["config", str(path), *overrides])
    out, err = capsys.readouterr()
    if code == 0:
        event("printed a config")
        assert err == ""
        printed = tmp_path / "printed.yaml"
        printed.write_text(out, encoding="utf-8")
        assert load_config(printed) == load_config(path, overrides)
    else:
        event("one error line")
        assert code == 2 and out == ""
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), err


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


# ---------------------------------------------------------------------------- predict / evaluate

def predict_inputs(tmp_path: Path) -> dict[str, Path]:
    rows = labeled_rows(8, seed=3)
    return {
        "lacks b": write_rows(tmp_path / "lacks_b.csv", ["a", "c", "label"],
                              [[r[0], r[2], r[3]] for r in rows]),
        "text in c": write_rows(tmp_path / "text.csv", HEADER,
                                [*rows[:2], [1, 2, "three", "no"]]),
        "inf in a": write_rows(tmp_path / "inf.csv", HEADER, [*rows[:3], ["inf", 2, 3, "no"]]),
        "header only": write_rows(tmp_path / "header.csv", HEADER, []),
        "unknown label": write_rows(tmp_path / "label.csv", HEADER,
                                    [*rows[:2], [1, 2, 3, "maybe"]]),
        "short row": write_rows(tmp_path / "short.csv", HEADER, [*rows[:2], [1, 2, "no"]]),
    }


PREDICT = {
    "predict: a model column missing": (
        ["predict", "{ckpt}", "{lacks b}", "-o", "{out}"],
        ["lacks_b.csv: missing column(s) 'b'", "expects these columns: a, b, c"]),
    "evaluate: a model column missing": (
        ["evaluate", "{ckpt}", "--data", "{lacks b}"], ["missing column(s) 'b'"]),
    "predict: text in a feature": (["predict", "{ckpt}", "{text in c}", "-o", "{out}"],
                                   ["text.csv, line 4, column 'c'", "not a number: 'three'"]),
    "predict: inf in a feature": (["predict", "{ckpt}", "{inf in a}", "-o", "{out}"],
                                  ["inf.csv, line 5, column 'a'", "not a finite number"]),
    "predict: no rows": (["predict", "{ckpt}", "{header only}", "-o", "{out}"],
                         ["header.csv: empty data set"]),
    "predict: short row": (["predict", "{ckpt}", "{short row}", "-o", "{out}"],
                           ["short.csv, line 4: row has 3 fields, header has 4"]),
    "evaluate: a label the model does not know": (
        ["evaluate", "{ckpt}", "--data", "{unknown label}"],
        ["label.csv, line 4, column 'label'", "label 'maybe' is not one the model knows"]),
    "predict: --output is a folder": (["predict", "{ckpt}", "{inf in a}", "-o", "{folder}"],
                                      ["--output", "is a folder", "predictions.csv"]),
}


@pytest.mark.parametrize("case", list(PREDICT))
def test_bad_predict_and_evaluate_input(case, csv_run, tmp_path, capsys) -> None:
    files = {**predict_inputs(tmp_path), "ckpt": csv_run / "last.pt", "out": tmp_path / "o.csv",
             "folder": tmp_path}
    argv, fragments = PREDICT[case]
    assert_all_in(error_line([a.format(**files) for a in argv], capsys), fragments)
    assert not (tmp_path / "o.csv").exists()


def test_predict_output_that_cannot_be_written(csv_run, tmp_path, capsys) -> None:
    rows = labeled_rows(4, seed=5)
    data = write_rows(tmp_path / "in.csv", HEADER, rows)
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    line = error_line(["predict", csv_run / "last.pt", data, "-o", blocker / "p.csv"], capsys)
    assert_all_in(line, [f"cannot write --output {blocker / 'p.csv'}", str(blocker)])


# ============================================================================ checkpoints

class CreatesAFile:
    """Unpickling this runs ``open(path, "w")``: what a malicious checkpoint could do."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def bad_checkpoints(ckpt: Path, folder: Path) -> dict[str, Path]:
    blob = ckpt.read_bytes()
    truncated = folder / "truncated.pt"
    truncated.write_bytes(blob[:len(blob) // 2])
    corrupted = bytearray(blob)
    middle = len(corrupted) // 2
    for i in range(middle, middle + 16):
        corrupted[i] ^= 0xFF
    (folder / "corrupted.pt").write_bytes(bytes(corrupted))
    evil_state = torch.load(ckpt, weights_only=True)
    evil_state["history"] = CreatesAFile(folder / "pwned")
    torch.save(evil_state, folder / "evil.pt")
    (folder / "a_folder.pt").mkdir()
    return {"truncated": truncated, "corrupted": folder / "corrupted.pt",
            "evil": folder / "evil.pt", "folder": folder / "a_folder.pt"}


CHECKPOINT_PROBLEMS = {"truncated": "truncated", "corrupted": "corrupted",
                       "evil": "not a logreg_torch checkpoint", "folder": "is a folder"}


@pytest.mark.parametrize("command", ["evaluate", "predict", "resume"])
@pytest.mark.parametrize("problem", list(CHECKPOINT_PROBLEMS))
def test_bad_checkpoint(problem, command, csv_run, tmp_path, capsys) -> None:
    bad = bad_checkpoints(csv_run / "last.pt", tmp_path)[problem]
    data = csv_run.parent / "train.csv"
    argv = {
        "evaluate": ["evaluate", bad],
        "predict": ["predict", bad, data, "-o", tmp_path / "o.csv"],
        "resume": csv_train_argv(data, tmp_path / "run", f"train.resume={bad}"),
    }[command]
    line = error_line(argv, capsys)
    assert_all_in(line, [str(bad), CHECKPOINT_PROBLEMS[problem]])
    assert "weights_only=False" not in line  # never advise the unsafe way out
    assert not (tmp_path / "pwned").exists()
    assert not (tmp_path / "o.csv").exists() and not (tmp_path / "run").exists()


def test_the_malicious_pickle_would_create_the_file(csv_run, tmp_path) -> None:
    # The control for test_bad_checkpoint[evil-*]: unpickled unsafely, the payload does run.
    evil = bad_checkpoints(csv_run / "last.pt", tmp_path)["evil"]
    with pytest.raises(CheckpointError):
        load_checkpoint(evil)
    assert not (tmp_path / "pwned").exists()
    torch.load(evil, weights_only=False)
    assert (tmp_path / "pwned").exists()


def test_every_flipped_region_of_a_real_checkpoint_is_caught(csv_run, tmp_path) -> None:
    # torch.load does not check the zip CRC-32s; a flip inside a tensor would load silently.
    blob = (csv_run / "last.pt").read_bytes()
    path = tmp_path / "flipped.pt"
    for fraction in np.linspace(0.02, 0.98, 25):
        corrupted = bytearray(blob)
        at = int(len(blob) * fraction)
        for i in range(at, min(at + 8, len(blob))):
            corrupted[i] ^= 0x5A
        path.write_bytes(bytes(corrupted))
        try:
            state = load_checkpoint(path)
        except CheckpointError as e:
            assert "\n" not in str(e) and str(path) in str(e)
            continue
        # Only bytes zip does not checksum may change and still load: its headers' padding.
        assert all(torch.equal(v, w) for v, w in zip(
            state["model"].values(), load_checkpoint(csv_run / "last.pt")["model"].values(),
            strict=True)), f"flip at byte {at} loaded as different weights"


def test_checkpoint_written_without_crcs_still_loads(tmp_path, csv_run) -> None:
    # torch.serialization.set_crc32_options(False) writes CRC 0: nothing to check, not corrupt.
    state = load_checkpoint(csv_run / "last.pt")
    torch.serialization.set_crc32_options(False)
    try:
        save_checkpoint(state, tmp_path / "no_crc.pt")
    finally:
        torch.serialization.set_crc32_options(True)
    assert load_checkpoint(tmp_path / "no_crc.pt")["epoch"] == state["epoch"]


@pytest.mark.parametrize(("extra", "fragments"), [
    (["data.features=[a,b]"], ["data.features=['a', 'b'] (the run: None)"]),
    (["model.name=mlp", "model.hidden=[4]"], ["model.name=mlp (the run: logistic)"]),
])
def test_resume_from_another_model_shape(extra, fragments, csv_run, tmp_path, capsys) -> None:
    before = {p.name: p.read_bytes() for p in csv_run.iterdir() if p.is_file()}
    argv = csv_train_argv(csv_run.parent / "train.csv", csv_run,
                          f"train.resume={csv_run / 'last.pt'}", "train.epochs=4", *extra)
    line = error_line(argv, capsys)
    assert_all_in(line, [f"cannot resume from {csv_run / 'last.pt'}", *fragments])
    after = {p.name: p.read_bytes() for p in csv_run.iterdir() if p.is_file()}
    assert after == before  # the run folder is untouched


@pytest.mark.parametrize(("header", "fragments"), [
    (["a", "b", "label"], ["holds a logistic model with 3 features",
                           "the config builds logistic with 2"]),
    (["a", "b", "d", "label"], ["the data's column 2 is 'd', the run was trained with 'c'"]),
])
def test_resume_on_a_data_file_that_changed(header, fragments, tmp_path, capsys) -> None:
    # The same config, but the file it names now holds other columns.
    data = write_rows(tmp_path / "train.csv", HEADER, labeled_rows())
    run = tmp_path / "run"
    assert cli.main([str(a) for a in csv_train_argv(data, run, "train.epochs=1")]) == 0
    rows = [[*r[:len(header) - 1], r[-1]] for r in labeled_rows()]
    write_rows(data, header, rows)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    line = error_line(csv_train_argv(data, run, f"train.resume={run}", "train.epochs=2"),
                      capsys)
    assert_all_in(line, [f"cannot resume from {run / 'last.pt'}", *fragments])
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_weights_that_do_not_fit_their_model_args(csv_run, tmp_path, capsys) -> None:
    state = load_checkpoint(csv_run / "last.pt")
    state["model_args"] = {**state["model_args"], "in_features": 4}
    save_checkpoint(state, tmp_path / "mismatch.pt")
    with pytest.raises(CheckpointError, match="do not fit a logistic model with 4 features"):
        model_from_checkpoint(state)
    line = error_line(["evaluate", tmp_path / "mismatch.pt"], capsys)
    assert "checkpoint weights do not fit a logistic model with 4 features" in line


# ============================================================================ loss inputs

EXPLAIN = {
    "probability above 1": (["--probs", "1.5", "--labels", "1"],
                            ["probability 1.5 of customer 1", "between 0 and 1"]),
    "negative probability": (["--probs", "0.2,-0.1", "--labels", "1,0"], ["customer 2"]),
    "label 2": (["--probs", "0.5", "--labels", "2"], ["must be 0 (cardigan) or 1 (jacket)"]),
    "lengths differ": (["--probs", "0.5,0.2", "--labels", "1"], ["2 probs but 1 labels"]),
    "labels missing": (["--probs", "0.5"], ["both probs and labels"]),
    "nan probability": (["--probs", "nan", "--labels", "1"], ["--probs", "not a finite number"]),
    "empty list": (["--probs", "", "--labels", ""], ["--probs", "no numbers given"]),
}


@pytest.mark.parametrize("case", list(EXPLAIN))
def test_bad_explain_input(case, capsys) -> None:
    argv, fragments = EXPLAIN[case]
    assert_all_in(error_line(["explain", *argv], capsys), fragments)


@pytest.mark.parametrize(("section", "value", "fragments"), [
    ("loss", LossConfig(label_smoothing=1.0), ["loss.label_smoothing must be in [0, 1)"]),
    ("loss", LossConfig(pos_weight=-1.0), ["loss.pos_weight", "positive number"]),
    ("loss", LossConfig(l2=float("nan")), ["loss.l2 must be >= 0"]),
    ("optim", OptimConfig(lr=-0.1), ["optim.lr must be > 0"]),
])
def test_fit_checks_a_config_built_in_code(section, value, fragments, tmp_path) -> None:
    # The API path: no load_config in between, yet the same one-line error, before any folder.
    cfg = dataclasses.replace(Config(), **{section: value},
                              log=LogConfig(run_dir=str(tmp_path / "run"), histogram_every=0))
    with pytest.raises(ConfigError) as info:
        fit(cfg)
    assert_all_in(str(info.value), [*fragments, "the config given to fit"])
    assert not (tmp_path / "run").exists()

