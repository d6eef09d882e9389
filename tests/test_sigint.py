"""Ctrl-C: a real SIGINT sent to a real ``logreg-torch train`` process in the middle of an epoch.

The moment is known, not left to the clock: a ``sitecustomize.py`` put on the child's
PYTHONPATH wraps torch's ``Adam.step`` so that after a chosen step the process writes a marker
file and idles; the test waits for the marker and only then sends SIGINT. Nothing in
logreg_torch is patched: the child is the installed console script. Then: exit code 130, the
resume command printed, last.pt holds the last finished epoch, and running that command ends
with the weights (bit for bit) and history of a run that was never interrupted.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from logreg_torch import cli
from logreg_torch.checkpoint import load_checkpoint
from logreg_torch.config import load_config
from logreg_torch.train import fit

pytestmark = [pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals"),
              pytest.mark.usefixtures("no_figures")]

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO / "configs" / "default.yaml"
EPOCHS = 5
STEPS_PER_EPOCH = 13  # jackets: 800 training rows in batches of 64
STOP_AFTER_STEP = 2 * STEPS_PER_EPOCH + 5  # 5 of the 13 steps of epoch 3 done
# On the CPU on every machine: the resumed run is compared bit for bit with one in this process.
RUN = (f"train.epochs={EPOCHS}", "log.histogram_every=0", "train.device=cpu")

SITECUSTOMIZE = '''\
"""Test hook (tests/test_sigint.py): after step SIGINT_AFTER_STEP, write SIGINT_MARKER and
idle until a signal ends the wait."""
import os

if os.environ.get("SIGINT_AFTER_STEP"):
    import time

    import torch

    _after = int(os.environ["SIGINT_AFTER_STEP"])
    _step = torch.optim.Adam.step
    _count = 0

    def step(self, *args, **kwargs):
        global _count
        out = _step(self, *args, **kwargs)
        _count += 1
        if _count == _after:
            # written whole, then renamed: the test sends SIGINT as soon as the name exists
            with open(os.environ["SIGINT_MARKER"] + ".tmp", "w") as f:
                f.write(str(_count))
            os.replace(os.environ["SIGINT_MARKER"] + ".tmp", os.environ["SIGINT_MARKER"])
            deadline = time.monotonic() + 120  # the test fails on its side long before
            while time.monotonic() < deadline:
                time.sleep(0.01)  # the SIGINT lands here, mid-epoch
        return out

    torch.optim.Adam.step = step
'''


def _command() -> list[str]:
    script = Path(sys.executable).parent / "logreg-torch"
    if script.exists():
        return [str(script)]
    found = shutil.which("logreg-torch")
    return [found] if found else [sys.executable, "-m", "logreg_torch"]


def interrupt_mid_epoch(tmp_path: Path, *overrides: str) -> tuple[int, str, Path]:
    """Run ``logreg-torch train``, SIGINT it after STOP_AFTER_STEP optimizer steps; return
    (exit code, stderr, run folder)."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    marker, run = tmp_path / "stopped", tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(hook), *filter(None, [os.environ.get("PYTHONPATH")])]),
        SIGINT_AFTER_STEP=str(STOP_AFTER_STEP), SIGINT_MARKER=str(marker))
    proc = subprocess.Popen([*_command(), "train", str(DEFAULT), *RUN, *overrides,
                             f"log.run_dir={run}", "--quiet"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120  # a hang guard, not a timing assert
        while not marker.exists():
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the run never reached the step"
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert marker.read_text() == str(STOP_AFTER_STEP)
    return proc.returncode, err, run


def check_interrupted_run(tmp_path: Path, capsys, *overrides: str) -> None:
    code, err, run = interrupt_mid_epoch(tmp_path, *overrides)
    assert code == 130, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    # The last line names the resume command.
    line = err.strip().splitlines()[-1]
    prefix = "interrupted; resume with: "
    assert line.startswith(prefix), err[-3000:]
    command = shlex.split(line[len(prefix):])
    assert command == ["logreg-torch", "train", str(run / "config.yaml"),
                       f"train.resume={run / 'last.pt'}"]
    # last.pt holds epoch 2, the last finished one, not the half of epoch 3 done.
    state = load_checkpoint(run / "last.pt")
    assert state["epoch"] == 2 and state["step"] == 2 * STEPS_PER_EPOCH
    assert [r["epoch"] for r in state["history"]] == [1, 2]

    # The printed command (in this process), against a run never interrupted.
    assert cli.main([*command[1:], "--quiet"]) == 0
    reference = fit(load_config(DEFAULT, [*RUN, *overrides,
                                          f"log.run_dir={tmp_path / 'reference'}"]))
    resumed = load_checkpoint(run / "last.pt")
    assert resumed["epoch"] == EPOCHS
    assert resumed["history"] == reference.history
    expected = reference.model.state_dict()
    assert resumed["model"].keys() == expected.keys()
    for name, weight in expected.items():
        assert torch.equal(resumed["model"][name], weight), name
    capsys.readouterr()


def test_sigint_mid_epoch_keeps_last_of_the_finished_epoch(tmp_path, capsys) -> None:
    # last.pt is written after every epoch: the handler must keep epoch 2's file as it is.
    check_interrupted_run(tmp_path, capsys)


def test_sigint_mid_epoch_with_no_checkpoint_due_saves_the_finished_epoch(tmp_path,
                                                                          capsys) -> None:
    # No last.pt exists when the signal comes (the first is due at epoch 5): the handler must
    # write one, and it must hold epoch 2's model, not the half-trained epoch 3.
    check_interrupted_run(tmp_path, capsys, "train.checkpoint_every=5")
