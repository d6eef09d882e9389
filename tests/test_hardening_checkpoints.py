"""Bad input, end to end through ``logreg_torch.cli.main``: every mistake ends with exit code 2
and exactly one ``error:`` line on stderr (what, where, how to fix), never a traceback. This
file: what is given to a trained model, kept here with it (``csv_run``): the data files of
``predict`` and ``evaluate``, checkpoints (truncated, corrupted, malicious, a folder; weights
that do not fit), resumes that the run or the data no longer fits.

The loader-level checks live beside their modules (test_data_sources.py, test_checkpoint.py);
this file proves that the same mistakes reach a user of the command line as one clear line, and
adds the cases those files lack.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hardening_helpers import (  # tests/ is on sys.path under pytest
    HEADER,
    assert_all_in,
    csv_train_argv,
    error_line,
    labeled_rows,
    write_rows,
)

from logreg_torch import cli
from logreg_torch.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from logreg_torch.train import model_from_checkpoint

pytestmark = pytest.mark.usefixtures("no_figures")


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
