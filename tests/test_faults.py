"""Fault injection: SIGKILL mid-training, a disk that fills up mid-checkpoint, a diverging run,
two runs started in the same second. After each fault nothing already saved is lost, the user
gets one clear line, and resuming finishes the run exactly as if nothing had happened."""

from __future__ import annotations

import errno
import io
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from logreg_torch import cli
from logreg_torch.checkpoint import load_checkpoint
from logreg_torch.config import load_config
from logreg_torch.train import TrainingError, fit, new_run_dir

pytestmark = pytest.mark.usefixtures("no_figures")

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO / "configs" / "default.yaml"
# 200 rows, 160 to train on, 4 minibatches an epoch: a run of a few epochs takes well under 1 s.
# The runs here are on the CPU on every machine: resumes are compared bit for bit, divergence
# is the CPU optimizers' (on CUDA torch's fused Adam overflows to inf weights instead).
TINY = ("data.source=synthetic", "data.n_samples=200", "data.n_features=5",
        "data.n_informative=3", "train.batch_size=48", "log.histogram_every=0",
        "train.device=cpu")


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["model"]


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def one_error_line(argv: list[str], capsys) -> str:
    capsys.readouterr()
    assert cli.main([str(a) for a in argv]) == 2
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert out == "" and len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


# ============================================================================ kill -9

KILL_EPOCHS = 6
# 1600 training rows in minibatches of 64, a checkpoint after every epoch.
KILL_RUN = ("data.source=synthetic", "data.n_samples=2000", "data.n_features=20",
            "data.n_informative=5", "train.batch_size=64", "train.checkpoint_every=1",
            f"train.epochs={KILL_EPOCHS}", "optim.lr=0.01", "log.histogram_every=0",
            "train.device=cpu")

# Test hook, put on a training process's PYTHONPATH: when logreg_torch.checkpoint's torch.save
# writes KILL_FILE for epoch KILL_EPOCH, the process SIGKILLs itself at KILL_POINT:
#   "write":  half of the checkpoint's bytes are in the temp file;
#   "rename": the temp file is complete and fsynced, os.replace not yet called.
# Before dying it records what it did in KILL_MARKER. Only torch and os are patched.
SITECUSTOMIZE = """\
import os

if os.environ.get("KILL_POINT"):
    import io
    import signal

    import torch

    _save, _replace = torch.save, os.replace
    _armed = {}

    def _die(note):
        with open(os.environ["KILL_MARKER"], "w") as f:
            f.write(note)
        os.kill(os.getpid(), signal.SIGKILL)

    def save(obj, f, *args, **kwargs):
        name = getattr(f, "fileno", None) and os.readlink(f"/proc/self/fd/{f.fileno()}")
        ours = (isinstance(obj, dict) and obj.get("epoch") == int(os.environ["KILL_EPOCH"])
                and name and os.path.basename(name).startswith("." + os.environ["KILL_FILE"]))
        if not ours:
            return _save(obj, f, *args, **kwargs)
        if os.environ["KILL_POINT"] == "write":
            buffer = io.BytesIO()
            _save(obj, buffer, *args, **kwargs)
            data = buffer.getvalue()
            f.write(data[: len(data) // 2])
            f.flush()
            _die(f"{name} {len(data) // 2} of {len(data)}")
        _armed["temp"] = name
        return _save(obj, f, *args, **kwargs)

    def replace(src, dst, *args, **kwargs):
        if _armed.get("temp") == os.path.abspath(src):
            _die(f"{src} complete")
        return _replace(src, dst, *args, **kwargs)

    torch.save, os.replace = save, replace
"""


def run_until_killed(tmp_path: Path, argv: list[str], point: str, file: str,
                     epoch: int) -> tuple[Path, int, int]:
    """Run ``python -m logreg_torch`` with the hook; it must die by SIGKILL at the point.
    Returns (the temp file it was writing, bytes written, bytes of the whole checkpoint)."""
    hook = tmp_path / "hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    marker = tmp_path / f"killed-{point}-{file}-{epoch}"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(hook), *filter(None, [os.environ.get("PYTHONPATH")])]), KILL_POINT=point,
        KILL_FILE=file, KILL_EPOCH=str(epoch), KILL_MARKER=str(marker))
    proc = subprocess.run([sys.executable, "-m", "logreg_torch", *argv], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    temp, *rest = marker.read_text().split()
    if point == "write":
        return Path(temp), int(rest[0]), int(rest[2])
    size = Path(temp).stat().st_size
    return Path(temp), size, size


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
def test_kill_9_inside_a_checkpoint_write_never_loses_a_checkpoint(tmp_path) -> None:
    """SIGKILL a training run inside three checkpoint writes, resuming after each; a run that
    was never killed is the reference."""
    run = tmp_path / "run"
    first = ["train", str(DEFAULT), *KILL_RUN, f"log.run_dir={run}", "--quiet"]
    resume = ["train", str(run / "config.yaml"), f"train.resume={run / 'last.pt'}", "--quiet"]
    kills = [(first, "write", "last.pt", 2),  # half of last.pt of epoch 2 on disk
             (resume, "rename", "last.pt", 4),  # last.pt of epoch 4 complete, not renamed
             (resume, "write", "best.pt", 5)]  # half of best.pt of epoch 5
    strays: set[Path] = set()
    for argv, point, file, epoch in kills:
        temp, written, whole = run_until_killed(tmp_path, argv, point, file, epoch)
        # The kill landed where it was aimed: in the temp file beside `file`, with the bytes
        # written so far.
        assert temp.parent == run and temp.name.startswith(f".{file}.") and temp.exists()
        assert temp.stat().st_size == written and (written < whole) == (point == "write")
        if point == "rename":  # the complete temp file holds what the rename would have kept
            assert load_checkpoint(temp)["epoch"] == epoch
        strays.add(temp)
        # What a kill leaves: loadable checkpoints of the epochs before, hidden temp files.
        # The file being replaced is the complete one of an earlier epoch.
        last = load_checkpoint(run / "last.pt")  # weights_only=True, zip CRCs checked
        assert last["epoch"] == epoch - 1  # best.pt of an epoch is written before its last.pt
        best = load_checkpoint(run / "best.pt")["epoch"]  # best.pt is written before last.pt
        assert best < epoch if file == "best.pt" else best <= epoch
        assert {p for p in run.iterdir() if p.name.endswith(".tmp")} == strays
    # Resuming from what the last kill left finishes the run, and nothing was lost: the same
    # history and bit for bit the same weights as a run that was never interrupted.
    assert cli.main(resume) == 0
    state = load_checkpoint(run / "last.pt")
    assert state["epoch"] == KILL_EPOCHS
    assert [r["epoch"] for r in state["history"]] == list(range(1, KILL_EPOCHS + 1))
    reference = fit(load_config(DEFAULT, [*KILL_RUN, f"log.run_dir={tmp_path / 'ref'}"]))
    assert state["history"] == reference.history
    assert same_weights(run / "last.pt", tmp_path / "ref" / "last.pt")


# ============================================================================ full disk

def fail_writing(monkeypatch, name: str, epoch: int) -> dict:
    """Make the torch.save that logreg_torch.checkpoint calls for ``name`` at ``epoch`` write
    half of the bytes and then fail as a full disk does. Returns what it saw."""
    real_save = torch.save
    seen: dict = {}

    def save(obj, f, *args, **kwargs):
        temp = Path(os.readlink(f"/proc/self/fd/{f.fileno()}"))  # .<name>.XXXX.tmp
        if not (temp.name.startswith(f".{name}.") and obj["epoch"] == epoch):
            return real_save(obj, f, *args, **kwargs)
        target = temp.parent / name
        seen["before"] = target.read_bytes() if target.exists() else None
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        f.write(buffer.getvalue()[:len(buffer.getvalue()) // 2])
        f.flush()
        seen["failed"] = target
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("logreg_torch.checkpoint.torch.save", save)
    return seen


needs_proc = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")


def no_temp_files(run: Path) -> bool:
    return not [p for p in run.iterdir() if p.name.endswith(".tmp")]


@needs_proc
def test_full_disk_while_writing_last_keeps_the_previous_one(tmp_path, monkeypatch) -> None:
    run = tmp_path / "run"
    cfg = [*TINY, "train.epochs=5", f"log.run_dir={run}"]
    seen = fail_writing(monkeypatch, "last.pt", epoch=3)
    with pytest.raises(TrainingError) as info:
        fit(load_config(None, cfg))
    message = str(info.value)
    assert "\n" not in message
    for part in (f"cannot write checkpoint {run / 'last.pt'}", "No space left on device (ENOSPC)",
                 "training stopped at epoch 3", f"last good checkpoint: {run / 'last.pt'}"):
        assert part in message, message
    assert seen["failed"] == run / "last.pt"
    assert (run / "last.pt").read_bytes() == seen["before"]  # not a byte of it changed
    assert load_checkpoint(run / "last.pt")["epoch"] == 2
    assert no_temp_files(run)

    # Space freed: resuming finishes the run as if the disk had never filled.
    monkeypatch.undo()
    monkeypatch.setattr("logreg_torch.tracking.figures_available", lambda: False)
    resumed = fit(load_config(None, [*cfg, f"train.resume={run / 'last.pt'}"]))
    full = fit(load_config(None, [*TINY, "train.epochs=5", f"log.run_dir={tmp_path / 'full'}"]))
    assert resumed.history == full.history
    assert same_weights(run / "last.pt", tmp_path / "full" / "last.pt")


@needs_proc
def test_full_disk_while_writing_best_is_one_line_through_the_cli(tmp_path, monkeypatch,
                                                                  capsys) -> None:
    run = tmp_path / "run"
    seen = fail_writing(monkeypatch, "best.pt", epoch=2)
    line = one_error_line(["train", DEFAULT, *TINY, "train.epochs=4", f"log.run_dir={run}",
                           "--quiet"], capsys)
    for part in (f"cannot write checkpoint {run / 'best.pt'}", "No space left on device",
                 "epoch 2", f"last good checkpoint: {run / 'last.pt'}"):
        assert part in line, line
    assert (run / "best.pt").read_bytes() == seen["before"]
    assert load_checkpoint(run / "best.pt")["epoch"] == 1
    assert load_checkpoint(run / "last.pt")["epoch"] == 1
    assert no_temp_files(run)


@needs_proc
def test_full_disk_at_the_first_write_leaves_no_checkpoint(tmp_path, monkeypatch) -> None:
    run = tmp_path / "run"
    seen = fail_writing(monkeypatch, "best.pt", epoch=1)
    with pytest.raises(TrainingError, match="epoch 1; last good checkpoint: none was written"):
        fit(load_config(None, [*TINY, "train.epochs=3", f"log.run_dir={run}"]))
    assert seen["before"] is None
    assert not (run / "best.pt").exists() and not (run / "last.pt").exists()
    assert no_temp_files(run)


def test_full_disk_at_a_background_fsync_stops_the_run_at_that_epoch(tmp_path,
                                                                      monkeypatch) -> None:
    """A checkpoint's fsync and rename run in a thread (logreg_torch.checkpoint.
    BackgroundCommits): when one fails, the run stops at the next save with the same line,
    and the file it would have replaced is as it was."""
    import logreg_torch.checkpoint as checkpoint

    run, real_commit = tmp_path / "run", checkpoint.commit

    def commit(tmp, path):
        if Path(path).name == "last.pt" and torch.load(tmp, weights_only=False)["epoch"] == 3:
            tmp.unlink()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_commit(tmp, path)

    monkeypatch.setattr(checkpoint, "commit", commit)
    with pytest.raises(TrainingError) as info:
        fit(load_config(None, [*TINY, "train.epochs=5", f"log.run_dir={run}"]))
    for part in (f"cannot write checkpoint {run / 'last.pt'}", "(ENOSPC)",
                 "training stopped at epoch 3", f"last good checkpoint: {run / 'last.pt'}"):
        assert part in str(info.value), str(info.value)
    assert load_checkpoint(run / "last.pt")["epoch"] == 2
    assert no_temp_files(run)


# ============================================================================ divergence

def test_divergence_stops_with_one_line_naming_the_last_good_checkpoint(tmp_path,
                                                                         capsys) -> None:
    # Full-batch SGD with lr 1e38: epoch 1 lands on weights ~1e37, epoch 2's logits overflow.
    run = tmp_path / "run"
    line = one_error_line(["train", DEFAULT, *TINY, "optim.name=sgd", "optim.lr=1e38",
                           "train.batch_size=null", "train.epochs=10", f"log.run_dir={run}",
                           "--quiet"], capsys)
    assert line.startswith("error: training diverged at epoch 2 (step 2): "), line
    assert f"last good checkpoint: {run / 'last.pt'}" in line
    assert line.endswith("; try a smaller optim.lr (now 1e+38)"), line
    state = load_checkpoint(run / "last.pt")
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values())


@pytest.mark.parametrize("config, overrides, why", [
    # the README's cases: minibatch SGD, loss 1e28 after one epoch (histograms on), and Adam,
    # whose own step size overflows float32
    ("sgd.yaml", ["optim.lr=1e30"], "is over 10000 times the initial"),
    ("default.yaml", ["optim.lr=1e38"], "the optimizer's step overflowed"),
])
def test_divergence_is_one_line_whatever_the_optimizer(config, overrides, why, tmp_path,
                                                       capsys) -> None:
    run = tmp_path / "run"
    line = one_error_line(["train", REPO / "configs" / config, "train.epochs=5",
                           "log.histogram_every=1", *overrides, f"log.run_dir={run}",
                           "train.device=cpu", "--quiet"], capsys)
    assert line.startswith("error: training diverged at epoch 1 ") and why in line, line
    assert "last good checkpoint: none was written yet" in line
    assert re.search(r"; try a smaller optim.lr \(now 1e\+3[08]\)$", line), line
    assert not (run / "last.pt").exists() and not (run / "best.pt").exists()


def test_a_loss_that_only_grows_far_is_divergence(tmp_path, capsys) -> None:
    # SGD lr 1e6 on the full batch: finite losses, but they climb past 1e4 x ln 2.
    line = one_error_line(["train", DEFAULT, *TINY, "optim.name=sgd", "optim.lr=1e6",
                           "train.batch_size=null", "train.epochs=10",
                           f"log.run_dir={tmp_path / 'run'}", "--quiet"], capsys)
    assert "times the initial 0.6931" in line, line


# ============================================================================ same second

def test_runs_started_in_the_same_second_get_different_folders(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(time, "strftime", lambda fmt, *args: "20250101-120000")
    cfg = load_config(None, ["log.name=same"])
    n = 8
    start = threading.Barrier(n)
    folders: list[Path] = []

    def begin_run() -> None:
        start.wait()  # all eight ask for a folder at the same moment
        folders.append(new_run_dir(cfg))

    threads = [threading.Thread(target=begin_run) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(folders) == n and len(set(folders)) == n
    assert {f.name for f in folders} == {"same-20250101-120000"} | {
        f"same-20250101-120000-{i}" for i in range(2, n + 1)}
    assert all((tmp_path / f).is_dir() and not any((tmp_path / f).iterdir()) for f in folders)
