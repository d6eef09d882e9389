"""Fault injection: SIGKILL mid-training, a disk that fills up mid-checkpoint, a diverging run,
two runs started in the same second. After each fault nothing already saved is lost, the user
gets one clear line, and resuming finishes the run exactly as if nothing had happened."""

from __future__ import annotations

import errno
import io
import multiprocessing
import os
import random
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

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO / "configs" / "default.yaml"
# 200 rows, 160 to train on, 4 minibatches an epoch: a run of a few epochs takes well under 1 s.
TINY = ("data.source=synthetic", "data.n_samples=200", "data.n_features=5",
        "data.n_informative=3", "train.batch_size=48", "log.histogram_every=0")


@pytest.fixture(autouse=True)
def no_figures(monkeypatch) -> None:
    # End-of-run matplotlib figures are most of a tiny run's time (tests/test_tracking_run.py).
    monkeypatch.setattr("logreg_torch.tracking.figures_available", lambda: False)


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

KILLS = 4
KILL_EPOCHS = 20
# 4800 training rows in minibatches of 64 and a checkpoint after every epoch: an epoch takes a
# tenth of a second or more, a few milliseconds of it writing last.pt and best.pt.
KILL_RUN = ("data.source=synthetic", "data.n_samples=6000", "data.n_features=20",
            "data.n_informative=5", "train.batch_size=64", "train.checkpoint_every=1",
            f"train.epochs={KILL_EPOCHS}", "optim.lr=0.01", "log.histogram_every=0")
# What a training process imports, some of it lazily (torch._dynamo on the first optimizer,
# torchmetrics on the first evaluation): seconds each time in a fresh interpreter.
PRELOAD = ["logreg_torch.cli", "logreg_torch.train", "torch._dynamo",
           "torchmetrics.functional.classification", "torch.utils.tensorboard"]


class LastWatcher:
    """Loads ``last.pt`` every time it changes (a new inode or mtime), the way a user or a
    resume could at any moment: each version must load with ``weights_only=True``, hold the
    model and an epoch, and the epoch never goes back."""

    def __init__(self, run: Path) -> None:
        self.path = run / "last.pt"
        self.seen: tuple[int, int] | None = None
        self.epoch = 0
        self.loads = 0
        self.first_seen: dict[int, float] = {}  # epoch -> when last.pt first held it

    def poll(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return
        if (st.st_ino, st.st_mtime_ns) == self.seen:
            return
        self.seen = (st.st_ino, st.st_mtime_ns)
        state = torch.load(self.path, weights_only=True)  # a half-written file would fail here
        assert isinstance(state, dict) and "model" in state, sorted(state)
        assert isinstance(state["epoch"], int) and state["epoch"] >= self.epoch, state["epoch"]
        self.epoch = state["epoch"]
        self.first_seen.setdefault(self.epoch, time.monotonic())
        self.loads += 1

    def wait(self, until, alive, what: str, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while not until():
            self.poll()
            assert alive(), f"the training process ended before {what}"
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.005)
        self.poll()

    def epoch_seconds(self) -> float:
        """The shortest time per epoch seen between two versions of last.pt."""
        seen = sorted(self.first_seen.items())
        pairs = zip(seen, seen[1:], strict=False)
        return min((t2 - t1) / (e2 - e1) for (e1, t1), (e2, t2) in pairs)


def check_run_folder(run: Path, epoch_at_least: int) -> set[str]:
    """What a kill leaves: a loadable last.pt (and best.pt, config.yaml); returns the stray
    temp files, which are hidden and never read as a checkpoint."""
    state = load_checkpoint(run / "last.pt")  # weights_only=True, and the zip CRCs checked
    assert "model" in state and state["epoch"] >= epoch_at_least
    if (run / "best.pt").exists():
        load_checkpoint(run / "best.pt")
    assert load_config(run / "config.yaml").train.epochs == KILL_EPOCHS
    names = [p.name for p in run.iterdir()]
    strays = [n for n in names if n.endswith(".tmp")]
    assert all(n.startswith((".last.pt.", ".best.pt.", ".config.yaml.")) for n in strays), names
    return set(strays)


class Trainer:
    """One training process to kill: a real ``python -m logreg_torch train``, or ``cli.main``
    forked from a multiprocessing context."""

    def __init__(self, argv: list[str], cwd: Path, ctx=None) -> None:
        self.log = cwd / f"stderr-{time.monotonic_ns()}.txt"
        if ctx is None:
            with open(self.log, "w") as log:
                self.proc = subprocess.Popen([sys.executable, "-m", "logreg_torch", *argv],
                                             cwd=cwd, stdout=subprocess.DEVNULL, stderr=log)
        else:
            self.proc = ctx.Process(target=cli.main, args=(argv,))
            self.proc.start()

    def alive(self) -> bool:
        if isinstance(self.proc, subprocess.Popen):
            return self.proc.poll() is None
        return self.proc.is_alive()

    def kill(self) -> int | None:
        """SIGKILL; the exit code (-9 when the signal did it)."""
        if isinstance(self.proc, subprocess.Popen):
            self.proc.send_signal(signal.SIGKILL)
            return self.proc.wait(timeout=60)
        self.proc.kill()
        self.proc.join(timeout=60)
        return self.proc.exitcode

    def stderr(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


def test_kill_9_during_training_never_loses_a_checkpoint(tmp_path) -> None:
    """SIGKILL a training run at seeded random moments, four times, resuming after each."""
    # The first process is a real `python -m logreg_torch train`. The resumed ones are forked
    # from a server that imported logreg_torch once, and run the same cli.main(["train", ...]):
    # a fresh interpreter spends seconds on imports before its first epoch.
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    from multiprocessing import forkserver

    forkserver.ensure_running()  # imports in the background while the first process does too

    run = tmp_path / "run"
    watcher = LastWatcher(run)
    rng = random.Random(20240607)
    strays: set[str] = set()  # temp files of writes a kill cut short
    moments: list[int] = []
    resume = ["train", str(run / "config.yaml"), f"train.resume={run / 'last.pt'}", "--quiet"]
    for kill in range(KILLS):
        before = watcher.epoch
        if kill == 0:
            trainer = Trainer(["train", str(DEFAULT), *KILL_RUN, f"log.run_dir={run}",
                               "--quiet"], tmp_path)
        else:  # the resume command the CLI prints on Ctrl-C
            trainer = Trainer(resume, tmp_path, ctx)
        try:
            # A seeded random moment up to 1.5 epochs after this process wrote its first
            # last.pt (the first process: its second, to time an epoch), whatever it is
            # doing then: a minibatch step, validation, or writing a checkpoint.
            versions = 2 if kill == 0 else 1
            watcher.wait(lambda before=before, versions=versions: watcher.epoch > before and
                         len(watcher.first_seen) >= versions, trainer.alive,
                         f"kill {kill + 1}'s first last.pt")
            deadline = watcher.first_seen[watcher.epoch] + rng.uniform(0.0, 1.5) * \
                watcher.epoch_seconds()
            watcher.wait(lambda deadline=deadline: time.monotonic() >= deadline,
                         trainer.alive, f"kill {kill + 1}'s moment")
        except AssertionError as e:
            raise AssertionError(f"{e}; its stderr: {trainer.stderr()[-2000:]}") from None
        finally:
            code = trainer.kill()
        assert code == -signal.SIGKILL, f"kill {kill + 1}: the run had ended ({code})"
        watcher.poll()
        moments.append(watcher.epoch)
        strays |= check_run_folder(run, epoch_at_least=before + 1)

    assert watcher.epoch < KILL_EPOCHS, moments
    # Resuming from what the last kill left finishes the run, and nothing was lost: the same
    # history and bit for bit the same weights as a run that was never interrupted.
    assert cli.main(resume) == 0
    state = load_checkpoint(run / "last.pt")
    assert state["epoch"] == KILL_EPOCHS
    assert [r["epoch"] for r in state["history"]] == list(range(1, KILL_EPOCHS + 1))
    reference = fit(load_config(DEFAULT, [*KILL_RUN, f"log.run_dir={tmp_path / 'ref'}"]))
    assert state["history"] == reference.history
    assert same_weights(run / "last.pt", tmp_path / "ref" / "last.pt")
    assert watcher.loads >= KILLS + 1
    print(f"killed at epochs {moments} of {KILL_EPOCHS}; {watcher.loads} versions of last.pt "
          f"loaded while training ran; {len(strays)} write(s) cut short")


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
                           "--quiet"], capsys)
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
