"""Distributed training under torchrun: what a dead peer, a peer that stops answering, or a
missing peer does to the job.

Each job here is a real two-process run of scripts/train.py (under torchrun, or its two ranks
started by hand with the environment torchrun gives them) in a subprocess, on the CPU (gloo):
the other rank ends with one error line and no hang, and the last checkpoint stays loadable.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from distributed_helpers import (
    CONFIGS,
    LAUNCH_TIMEOUT,
    MARKS,
    ROOT,
    TRAIN,
    _env,
    _free_port,
    _load,
    _run,
    _torchrun,
)

pytestmark = MARKS


# ----------------------------------------------------------------------------- faults

# At its 15th optimizer step, in the middle of epoch 3 (7 steps an epoch), rank 1 either dies
# (os._exit: no goodbye to the process group) or stops answering (sleeps). Rank 0 is then in
# the all-reduce of that step. torch's own Adam.step is patched, so this holds whatever module
# of logreg_torch runs the loop.
FAULTY_RANK = '''\
import os
import sys
import time

import torch

adam_step = torch.optim.Adam.step
steps = 0


def step(self, *args, **kwargs):
    global steps
    steps += 1
    if os.environ["RANK"] == "1" and steps == 15:
        if os.environ["FAULT"] == "die":
            os._exit(1)
        time.sleep(600)  # ended by whoever runs the job
    return adam_step(self, *args, **kwargs)


torch.optim.Adam.step = step
from logreg_torch.cli import main  # noqa: E402

sys.exit(main(["train", *sys.argv[1:]]))
'''
FAULT_TIMEOUT = 5  # train.dist_timeout of the faulty jobs


def _check_rank_0_failed(stderr: str, run_dir: Path) -> None:
    """Rank 0's side of a job whose rank 1 failed mid-epoch 3: exactly one error line, no
    traceback of its own, and a loadable last.pt of the two finished epochs."""
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr[-3000:]
    assert "rank 0: a collective failed" in errors[0], errors[0]
    assert f"train.dist_timeout={FAULT_TIMEOUT}s" in errors[0], errors[0]
    last = _load(run_dir / "last.pt")
    assert last["epoch"] == 2 and len(last["history"]) == 2


def test_a_dead_rank_ends_the_job_with_one_error_line(tmp_path: Path) -> None:
    # Started by hand, with the environment torchrun gives its workers: torchrun itself would
    # SIGTERM rank 0 as soon as it sees rank 1 gone, racing rank 0's own report. _run fails
    # the test on a hang (past train.dist_timeout plus a launch margin).
    script = tmp_path / "faulty_rank.py"
    script.write_text(FAULTY_RANK)
    run_dir, port = tmp_path / "run", str(_free_port())
    procs = [subprocess.Popen(
        [sys.executable, str(script), str(CONFIGS / "default.yaml"), f"log.run_dir={run_dir}",
         f"train.dist_timeout={FAULT_TIMEOUT}", "train.device=cpu", "--quiet"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
        env=_env(WORLD_SIZE="2", RANK=str(r), LOCAL_RANK=str(r), LOCAL_WORLD_SIZE="2",
                 MASTER_ADDR="127.0.0.1", MASTER_PORT=port, FAULT="die")) for r in (0, 1)]
    try:
        results = [proc.communicate(timeout=FAULT_TIMEOUT + LAUNCH_TIMEOUT) for proc in procs]
    except subprocess.TimeoutExpired:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("a rank hung after its peer died")
    assert procs[1].returncode == 1  # it died
    assert procs[0].returncode == 2, results[0][1][-3000:]  # the CLI's code for an error
    assert "Traceback" not in results[0][1], results[0][1][-3000:]
    _check_rank_0_failed(results[0][1], run_dir)


def test_a_rank_that_stops_answering_times_out_under_torchrun(tmp_path: Path) -> None:
    # Rank 1 hangs: rank 0's all-reduce gives up after train.dist_timeout and rank 0 exits on
    # its own; torchrun then stops rank 1. _run fails the test if the job outlives
    # train.dist_timeout plus a launch margin.
    script = tmp_path / "faulty_rank.py"
    script.write_text(FAULTY_RANK)
    run_dir = tmp_path / "run"
    result, _ = _torchrun(script, "default.yaml", f"log.run_dir={run_dir}",
                          f"train.dist_timeout={FAULT_TIMEOUT}", "train.device=cpu",
                          timeout=FAULT_TIMEOUT + LAUNCH_TIMEOUT, check=False,
                          env=_env(FAULT="hang"))
    assert result.returncode != 0
    stderr = result.stderr
    # torchrun's report: the first failure is rank 0, exit code 2 (not its SIGTERM).
    root_cause = stderr.split("Root Cause", 1)[-1]
    assert re.search(r"rank\s*:\s*0\b.*\n\s*exitcode\s*:\s*2\b", root_cause), stderr[-3000:]
    # The only traceback is torchrun's own, ending its report.
    assert stderr.count("Traceback") == 1, stderr[-3000:]
    assert "ChildFailedError" in stderr[stderr.index("Traceback"):], stderr[-3000:]
    _check_rank_0_failed(stderr, run_dir)


def test_a_missing_peer_times_out_the_rendezvous(tmp_path: Path) -> None:
    # One process of a world of two, started by hand: nobody else ever joins. _run fails the
    # test if it hangs past 60 s (the 5 s timeout plus imports); the message shows the
    # rendezvous waited for the peer rather than failing some other way.
    env = _env(WORLD_SIZE="2", RANK="0", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
               MASTER_PORT=str(_free_port()))
    command = [sys.executable, str(TRAIN), str(CONFIGS / "default.yaml"),
               f"log.run_dir={tmp_path / 'run'}", "train.dist_timeout=5", "train.device=cpu",
               "--quiet"]
    result, _ = _run(command, timeout=60, env=env)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert "could not join the process group" in errors[0], errors[0]
    assert "train.dist_timeout=5s" in errors[0], errors[0]
    assert not (tmp_path / "run").exists()  # it failed before choosing a run folder
