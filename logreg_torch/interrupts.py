"""Ctrl-C that lands where it is safe: a stop requested at any moment, acted on at once except
inside a few short critical sections, which finish first.

Python raises ``KeyboardInterrupt`` wherever the main thread happens to be. Inside the
TensorBoard writer (a file and a background thread), while worker threads of the fused path
still write into tensors, or while the process exits, that leaves half-done state behind; one
run in about eighteen aborted with ``ValueError: write to closed file`` /
``pybind11::error_already_set``. ``handle_sigint`` installs a handler that raises at once
outside ``critical()`` sections, defers the raise to the end of one inside them, and ignores
further presses while the first is being handled (saving ``last.pt``, closing the writer).
Without ``handle_sigint`` (a library caller's own process) ``critical()`` costs nothing and
changes nothing.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_state = {"installed": False, "depth": 0, "pending": False, "stopping": False}


def _on_sigint(signum: int, frame: object) -> None:
    if _state["stopping"]:
        return  # already stopping: let the clean-up finish
    if _state["depth"]:
        _state["pending"] = True  # raised when the critical section ends
        return
    _state["stopping"] = True
    raise KeyboardInterrupt


@contextmanager
def critical() -> Iterator[None]:
    """A section that Ctrl-C does not cut: a press inside it raises when it ends."""
    if not _state["installed"] or threading.current_thread() is not threading.main_thread():
        yield
        return
    _state["depth"] += 1
    try:
        yield
    finally:
        _state["depth"] -= 1
        if not _state["depth"] and _state["pending"] and not _state["stopping"]:
            _state["pending"] = False
            _state["stopping"] = True
            raise KeyboardInterrupt


def stopping() -> None:
    """Mark the process as stopping: from now on Ctrl-C is ignored (the command has ended,
    or its clean-up runs)."""
    _state["stopping"] = True


@contextmanager
def handle_sigint(restore: bool = True) -> Iterator[None]:
    """Install the handler for the body (main thread only; elsewhere, or nested, a no-op).
    A process started with SIGINT ignored (``cmd &`` in a script) keeps ignoring it, as
    Python itself does: Ctrl-C at the terminal is not meant for it.

    ``restore=False`` ignores Ctrl-C afterwards, for a process that is about to exit (its
    interpreter shutdown joins threads and must not be cut either).
    """
    if (threading.current_thread() is not threading.main_thread() or _state["installed"]
            or signal.getsignal(signal.SIGINT) is signal.SIG_IGN):
        yield  # elsewhere, inside an outer handle_sigint (in charge), or ignored
        return
    previous = signal.signal(signal.SIGINT, _on_sigint)
    _state.update(installed=True, depth=0, pending=False, stopping=False)
    try:
        yield
    finally:
        _state["stopping"] = True
        if restore:
            signal.signal(signal.SIGINT, previous)
            _state.update(installed=False, depth=0, pending=False, stopping=False)
        else:
            # SIG_IGN, not our handler: interpreter shutdown puts a Python-level handler back
            # to SIG_DFL, and Ctrl-C would then kill the process (-2) as it exits.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
