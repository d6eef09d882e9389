"""Ctrl-C at random moments: every run ends with exit code 130 (or 0, when it had finished),
never a crash, and what it leaves loads: last.pt, and the events file with each epoch once.

Each run is ``logreg-torch train`` (``cli.console_main``, as the console script) in a process
forked from a server that imported everything once: a fresh interpreter would spend seconds on
imports. The moments are seeded and spread over a whole run: setup, epochs, checkpoint
writes, the end-of-run figures and the exit.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
from pathlib import Path

from tensorboard.backend.event_processing import event_accumulator as ea

from logreg_torch import cli
from logreg_torch.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO / "configs" / "default.yaml"
RUNS = 10
PRELOAD = ["logreg_torch.cli", "logreg_torch.fit", "torch._dynamo",
           "torchmetrics.functional.classification", "torch.utils.tensorboard",
           "matplotlib.figure", "matplotlib.backends.backend_agg"]


def _start(ctx, run: Path) -> tuple[multiprocessing.Process, Path]:
    log = run.with_suffix(".stderr")
    argv = ["train", str(DEFAULT), "train.epochs=6", "log.histogram_every=1",
            f"log.run_dir={run}", "train.device=cpu"]  # Ctrl-C is the point, not the device
    proc = ctx.Process(target=cli.console_main, args=(argv, str(log)))
    proc.start()
    # The clock starts with the command (console_main opens the log first): a press during
    # multiprocessing's own start-up of the child is a traceback of the harness, not ours.
    deadline = time.monotonic() + 60
    while not log.exists() and proc.is_alive() and time.monotonic() < deadline:
        time.sleep(0.001)
    return proc, log


def test_ctrl_c_at_random_moments_exits_130_and_leaves_loadable_files(tmp_path) -> None:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    # How long one whole run takes here, to spread the moments over it.
    proc, _ = _start(ctx, tmp_path / "whole")
    began = time.monotonic()
    proc.join(timeout=120)
    assert proc.exitcode == 0
    whole = time.monotonic() - began

    rng = random.Random(20261201)
    codes = []
    for i in range(RUNS):
        run = tmp_path / f"run{i}"
        proc, log = _start(ctx, run)
        time.sleep(rng.uniform(0.0, 1.1) * whole)
        if proc.is_alive():
            os.kill(proc.pid, signal.SIGINT)
        proc.join(timeout=60)
        err = log.read_text() if log.exists() else ""
        codes.append(proc.exitcode)
        assert proc.exitcode in (0, 130), f"run {i}: exit code {proc.exitcode}:\n{err[-3000:]}"
        assert "Traceback" not in err and "terminate called" not in err, err[-3000:]
        if proc.exitcode == 130 and (run / "last.pt").exists():  # a run to resume
            assert f"train.resume={run / 'last.pt'}" in err, err[-3000:]
        if (run / "last.pt").exists():
            state = load_checkpoint(run / "last.pt")
            assert 0 <= state["epoch"] <= 6
        if run.exists():
            acc = ea.EventAccumulator(str(run), size_guidance={ea.SCALARS: 0}).Reload()
            if "train/loss" in acc.Tags()[ea.SCALARS]:
                steps = [e.step for e in acc.Scalars("train/loss")]
                assert steps == list(range(1, len(steps) + 1)), steps
    assert 130 in codes, codes  # the moments did interrupt runs
    print(f"exit codes {codes}; a whole run took {whole:.2f} s")
