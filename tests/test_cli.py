"""``logreg-torch`` commands, run in-process through ``cli.main`` (and the entry points once each
in a subprocess): train, config, explain, Ctrl-C. User errors: exit code 2, one ``error:`` line
on stderr, no traceback. evaluate and predict: test_cli_evaluate_predict.py; summary:
test_cli_summary.py."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from cli_helpers import (  # tests/ is on sys.path under pytest
    DEFAULT,
    FAST,
    JACKETS,
    REPO,
    jackets_rows,
    one_error_line,
    trained_run,  # noqa: F401 (the run_dir fixture)
    write_csv,
)

import logreg_torch.fit as fit_module
from logreg_torch import cli
from logreg_torch.checkpoint import load_checkpoint
from logreg_torch.config import load_config

pytestmark = pytest.mark.usefixtures("no_figures")

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
