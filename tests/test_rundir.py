"""A run folder belongs to one run (logreg_torch/rundir.py): a refused resume or a second run
leaves it byte for byte as it was, two processes cannot both write it, and every command that
takes run folders or globs passes over folders without a checkpoint."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from logreg_torch import cli
from logreg_torch.checkpoint import load_checkpoint
from logreg_torch.rundir import MAY_CHANGE, changed_settings

pytestmark = pytest.mark.usefixtures("no_figures")

REPO = Path(__file__).resolve().parents[1]
DEFAULT = str(REPO / "configs" / "default.yaml")
FAST = ("log.histogram_every=0",)


def snapshot(folder: Path) -> dict[str, tuple]:
    """Every entry under ``folder`` (and the folder itself): kind, size, mtime, content hash."""
    entries = {".": ("dir", folder.stat().st_mtime_ns)}
    for path in sorted(folder.rglob("*")):
        st = path.stat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
        entries[str(path.relative_to(folder))] = (path.is_file(), st.st_size, st.st_mtime_ns,
                                                  digest)
    return entries


def train(*args: object) -> int:
    return cli.main(["train", *map(str, args)])


def one_line(capsys) -> str:
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert out == "" and len(lines) == 1 and lines[0].startswith("error: "), (out, err)
    return lines[0]


# ----------------------------------------------------------------------------- resume


@pytest.mark.parametrize(("first", "then", "named"), [
    # The commands: Adam's run resumed as SGD (KeyError 'momentum' mid-run), SGD's
    # resumed under the default config's Adam (KeyError 'step'), another learning rate
    # (torch would keep the checkpoint's silently), another split.
    ((), ("optim.name=sgd",), "optim.name=sgd (the run: adam)"),
    (("optim.name=sgd", "optim.momentum=0.9"), (), "optim.name=adam (the run: sgd)"),
    ((), ("optim.lr=0.1",), "optim.lr=0.1 (the run: 0.05)"),
    ((), ("data.val_fraction=0.3",), "data.val_fraction=0.3 (the run: 0.2)"),
], ids=["adam-to-sgd", "sgd-to-adam", "lr", "split"])
def test_a_refused_resume_leaves_the_run_folder_byte_for_byte(first, then, named, tmp_path,
                                                             capsys) -> None:
    run = tmp_path / "runs" / "run"
    assert train(DEFAULT, "train.epochs=2", *FAST, *first, f"log.run_dir={run}", "--quiet") == 0
    before = snapshot(run)
    capsys.readouterr()
    assert train(DEFAULT, f"train.resume={run}", *FAST, *then,
                 "train.epochs=22") == 2
    line = one_line(capsys)
    assert line.startswith(f"error: cannot resume from {run / 'last.pt'}: {named}"), line
    assert "start a new run without train.resume" in line
    assert snapshot(run) == before
    # And the README's resume command still works: the run was not damaged.
    assert train(run / "config.yaml", f"train.resume={run / 'last.pt'}", "train.epochs=3",
                 "--quiet") == 0
    assert load_checkpoint(run / "last.pt")["epoch"] == 3


def test_what_a_resume_may_change() -> None:
    saved = {"train": {"epochs": 20, "batch_size": 64, "device": "auto"},
             "optim": {"name": "adam", "lr": 0.05, "max_iter": 100, "tol": 1e-7},
             "log": {"name": "default", "run_dir": None}}
    # How long it goes on, where it runs, where it logs: a resume may change those.
    wanted = {"train": {"epochs": 40, "batch_size": 64, "device": "cpu"},
              "optim": {"name": "adam", "lr": 0.05, "max_iter": 500, "tol": 1e-9},
              "log": {"name": "default", "run_dir": "runs/x"}}
    assert changed_settings(saved, wanted) == []
    wanted["optim"].update(name="sgd", lr=0.1)
    wanted["train"]["batch_size"] = None
    assert changed_settings(saved, wanted) == [
        "train.batch_size=None (the run: 64)", "optim.name=sgd (the run: adam)",
        "optim.lr=0.1 (the run: 0.05)"]
    # A checkpoint from an older version may lack keys: those are not compared.
    assert changed_settings({"optim": {"name": "adam"}}, {"optim": {"name": "adam", "x": 1}}) == []
    assert {"train.epochs", "optim.max_iter", "optim.tol"} <= MAY_CHANGE
    assert not {"optim.name", "optim.lr", "model.name", "data.path"} & MAY_CHANGE


# ----------------------------------------------------------------------------- one run per folder


def test_a_new_run_into_a_folder_holding_a_run_is_refused(tmp_path, capsys) -> None:
    run = tmp_path / "newton"  # the README's log.run_dir=runs/newton, run twice
    assert train(DEFAULT, "train.epochs=1", *FAST, f"log.run_dir={run}", "--quiet") == 0
    before = snapshot(run)
    capsys.readouterr()
    assert train(DEFAULT, "train.epochs=1", *FAST, f"log.run_dir={run}", "--quiet") == 2
    line = one_line(capsys)
    assert line.startswith(f"error: log.run_dir={run} holds another run (config.yaml, last.pt, "
                           f"best.pt, events)"), line
    assert f"to go on with it: train.resume={run}" in line
    assert snapshot(run) == before
    # Events alone (a diverged run, a story run) are a run too.
    story = tmp_path / "story"
    story.mkdir()
    (story / "events.out.tfevents.1.host.1.0").write_bytes(b"")
    assert train(DEFAULT, "train.epochs=1", *FAST, f"log.run_dir={story}", "--quiet") == 2
    assert "holds another run (events)" in one_line(capsys)
    # An empty folder, or one holding other files, is free.
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    assert train(DEFAULT, "train.epochs=1", *FAST, f"log.run_dir={tmp_path / 'mine'}",
                 "--quiet") == 0


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}


def test_two_processes_started_together_cannot_both_write_one_folder(tmp_path) -> None:
    run = tmp_path / "run"
    argv = [sys.executable, "-m", "logreg_torch", "train", DEFAULT, "train.epochs=3", *FAST,
            f"log.run_dir={run}", "--quiet"]
    procs = [subprocess.Popen(argv, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.returncode, err) for p in procs for _, err in [p.communicate(timeout=300)]]
    assert sorted(code for code, _ in results) == [0, 2], results
    (err,) = [err for code, err in results if code == 2]
    assert len(err.splitlines()) == 1 and err.startswith(f"error: log.run_dir={run}") or (
        err.startswith(f"error: {run} is being written by another run")), err
    assert "train.resume" in err
    assert len(list(run.glob("events.out.tfevents.*"))) == 1
    assert load_checkpoint(run / "last.pt")["epoch"] == 3


HOLD = """
import sys
from logreg_torch.rundir import folder_lock
with folder_lock(sys.argv[1]):
    print("locked", flush=True)
    sys.stdin.read()
"""


def test_a_folder_locked_by_another_process_is_not_written(tmp_path, capsys) -> None:
    # Another process holds the folder (as a run does from its first write to its end): a run
    # into it, or a resume of it, is refused and writes nothing; once it lets go, it is free.
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], env=_env(), text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == "locked\n"
        assert train(DEFAULT, "train.epochs=1", *FAST, f"log.run_dir={run}", "--quiet") == 2
        line = one_line(capsys)
        assert line.startswith(f"error: {run} is being written by another run"), line
        assert f"train.resume={run}" in line
        assert list(run.iterdir()) == []
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    assert holder.returncode == 0
    assert train(DEFAULT, "train.epochs=1", *FAST, f"log.run_dir={run}", "--quiet") == 0


# ----------------------------------------------------------------------------- folders and globs


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """runs/good (2 epochs, with checkpoints), then runs/sgd-diverged (newer: config.yaml and
    events only, as the README's diverged run leaves them)."""
    root = tmp_path_factory.mktemp("glob") / "runs"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("logreg_torch.tracking.figures_available", lambda: False)
        assert train(DEFAULT, "train.epochs=2", *FAST, f"log.run_dir={root / 'good'}",
                     "--quiet") == 0
        assert train(DEFAULT, "optim.name=sgd", "optim.lr=1e30", "train.epochs=1", *FAST,
                     f"log.run_dir={root / 'sgd-diverged'}", "--quiet") == 2
    assert sorted(p.name for p in (root / "sgd-diverged").iterdir())[0] == "config.yaml"
    assert not list((root / "sgd-diverged").glob("*.pt"))
    return root


def test_commands_pass_over_folders_without_a_checkpoint(runs, tmp_path, capsys) -> None:
    good, bad = runs / "good", runs / "sgd-diverged"
    skipped = f"skipped 1 folder without best.pt or last.pt: {bad}"
    as_the_shell_expands = sorted(map(str, runs.glob("*")))
    capsys.readouterr()
    assert cli.main(["evaluate", *as_the_shell_expands, "--json"]) == 0
    err = capsys.readouterr().err
    assert skipped in err and f"using {good / 'best.pt'}" in err, err
    assert cli.main(["predict", *as_the_shell_expands, "jackets", "-o",
                     str(tmp_path / "p.npy")]) == 0
    assert skipped in capsys.readouterr().err
    # summary takes globs and several paths like the others (quoted: Python expands it)
    assert cli.main(["summary", str(runs / "*")]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("logistic regression on the original feature scale") and skipped in err
    assert cli.main(["summary", str(good), str(bad), "--json"]) == 0
    assert skipped in capsys.readouterr().err
    # train.resume=runs/* resumes the newest run that has a last.pt
    assert train(good / "config.yaml", f"train.resume={runs / '*'}", "train.epochs=3",
                 "--quiet") == 0
    assert f"skipped 1 folder without last.pt: {bad}" in capsys.readouterr().err
    assert load_checkpoint(good / "last.pt")["epoch"] == 3
    # Nothing left to use: one line naming the folders.
    assert cli.main(["evaluate", str(bad), str(tmp_path)]) == 2
    line = one_line(capsys)
    assert line == (f"error: none of the 2 folders given holds best.pt or last.pt: {bad}, "
                    f"{tmp_path}"), line
