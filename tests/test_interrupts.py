"""interrupts.py: Ctrl-C raises at once outside critical sections, at their end inside them,
and not again while stopping; the CLI imports no torch before it handles Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from logreg_torch import cli
from logreg_torch.interrupts import critical, handle_sigint


def _press() -> None:
    os.kill(os.getpid(), signal.SIGINT)


def test_outside_a_critical_section_ctrl_c_raises_at_once() -> None:
    reached = []
    with handle_sigint(), pytest.raises(KeyboardInterrupt):
        _press()
        reached.append("after")  # the handler runs before the next bytecode
    assert reached == []


def test_inside_a_critical_section_ctrl_c_waits_for_its_end() -> None:
    done = []
    with handle_sigint(), pytest.raises(KeyboardInterrupt):
        with critical():
            _press()
            done.append("rest of the section")
        done.append("never")
    assert done == ["rest of the section"]


def test_presses_while_stopping_are_ignored_and_the_handler_is_restored() -> None:
    before = signal.getsignal(signal.SIGINT)
    with handle_sigint():
        try:
            _press()
        except KeyboardInterrupt:
            _press()  # a second press during the clean-up: nothing raised
            cleaned = True
    assert cleaned and signal.getsignal(signal.SIGINT) is before


def test_critical_is_a_no_op_without_the_handler() -> None:
    with critical():
        pass  # nothing installed: nothing deferred, nothing raised


def test_cli_imports_no_torch_before_handling_ctrl_c() -> None:
    code = "import sys, logreg_torch.cli; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.strip() == "False"


def test_a_run_folder_without_checkpoints_is_one_line(tmp_path, capsys) -> None:
    assert cli.main(["evaluate", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: {tmp_path} is a folder without best.pt or last.pt; pass a run "
                   f"folder (runs/<name>-<time>) or a checkpoint file")


def test_a_nested_handler_leaves_the_outer_one_in_charge() -> None:
    # console_main installs the handler and main installs it again inside: the inner one must
    # not uninstall it on its way out, or the rest of the process runs with critical() off.
    done = []
    with handle_sigint(), pytest.raises(KeyboardInterrupt):
        with handle_sigint():
            pass
        with critical():
            _press()
            done.append("rest of the section")
    assert done == ["rest of the section"]


def test_ctrl_c_as_a_checkpoint_is_handed_over_neither_hangs_nor_leaves_a_temp_file(
        tmp_path) -> None:
    # The press lands as the commit thread is given the file (after the count of pending
    # files went up): cut there, ``wait`` waited forever for a file never queued.
    import threading

    import torch

    from logreg_torch.checkpoint import BackgroundCommits, save_checkpoint

    commits = BackgroundCommits()
    real_put = commits._jobs.put

    def put(job):
        _press()
        real_put(job)

    commits._jobs.put = put
    with handle_sigint(), pytest.raises(KeyboardInterrupt):
        save_checkpoint({"w": torch.ones(3)}, tmp_path / "last.pt", commits)
    waiter = threading.Thread(target=commits.wait, daemon=True)
    waiter.start()
    waiter.join(timeout=20)
    assert not waiter.is_alive(), "wait() hangs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_ctrl_c_while_a_config_is_built_waits_for_it(monkeypatch) -> None:
    # Cut inside OmegaConf, its clean-up failed on the half-built node and the interrupt came
    # out as a ConfigKeyError with a traceback (exit 1); the press now waits for the config.
    from logreg_torch.config import load

    validated = []
    real_validate = load.validate

    def validate(*args, **kwargs):
        _press()
        result = real_validate(*args, **kwargs)
        validated.append(True)
        return result

    monkeypatch.setattr(load, "validate", validate)
    with handle_sigint(), pytest.raises(KeyboardInterrupt):
        load.load_config(None, ["train.epochs=3"])
    assert validated == [True]


def test_ctrl_c_while_the_figures_process_starts_is_exit_130_in_one_line(tmp_path) -> None:
    # The first moments of `logreg-torch train`: the figures' process is started before the
    # command runs. A press there was a KeyboardInterrupt traceback (and exit -2).
    code = (
        "import os, signal, sys\n"
        "from logreg_torch import cli, figure_worker\n"
        "real = figure_worker.FigureWorker.__init__\n"
        "def init(self):\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    real(self)\n"
        "figure_worker.FigureWorker.__init__ = init\n"
        f"cli.console_main(['train', 'log.run_dir={tmp_path / 'run'}'])\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip() == "interrupted"
    assert not (tmp_path / "run").exists()


def test_a_process_that_ignores_ctrl_c_keeps_ignoring_it() -> None:
    # `logreg-torch train ... &` in a script starts with SIGINT ignored, so that Ctrl-C at
    # the terminal stops the script and not the job; installing the handler made it stoppable.
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with handle_sigint():
            _press()
            with critical():
                _press()
            still = signal.getsignal(signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, before)
    assert still is signal.SIG_IGN
