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
