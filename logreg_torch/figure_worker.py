"""The end-of-run figures drawn by a second process, started before this one imports torch.

Drawing the three validation figures costs matplotlib's import (0.3-0.7 s here) and the drawing
itself (0.3-0.5 s), after the last epoch, with nothing else left to do: most of a small run's
logging stage. ``logreg-torch train`` starts this worker first thing (``start``): it imports
numpy and matplotlib on another core while this process imports torch and trains, then waits.
At the end the run hands it the validation probabilities (``FigureWorker.send``) and takes
back the images as PNG, the bytes ``SummaryWriter.add_image`` would write for the arrays
``logreg_torch.figures.draw_all`` gives in this process: the run then neither imports PIL nor
encodes. The worker draws the second figure in a forked copy of itself, at the same time as
the other two (fork: the copy starts warm, fonts loaded), so the run waits for the slowest
figures, not for all three one after another.

The worker is started only by the command-line entry point (a process that owns its
lifetime), never by ``fit`` called from Python, which draws in-process. If the worker is
missing or fails, the run draws in-process: the figures never depend on it. It runs in a
session of its own (Ctrl-C at the terminal is the run's to handle) and ends when its input
closes, so it cannot outlive the run.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from logreg_torch.figures import FIGURE_TAGS

_worker: FigureWorker | None = None
_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


class FigureWorker:
    """One child process that draws the figures once."""

    def __init__(self) -> None:
        # One BLAS thread: the worker only draws, and a process without threads forks safely.
        env = {**os.environ, **dict.fromkeys(_THREAD_VARIABLES, "1")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "logreg_torch.figure_worker"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True, env=env)

    def send(self, probs: np.ndarray, targets: np.ndarray, names: Sequence[str]) -> bool:
        """Hand the worker the data to draw; False when it cannot take it."""
        try:
            pickle.dump((probs, targets, tuple(names)), self.proc.stdin)
            self.proc.stdin.close()
            return True
        except OSError:
            self.close()
            return False

    def receive(self) -> Iterator[tuple[str, int, int, bytes] | None]:
        """The figures as (tag, height, width, PNG bytes), in ``FIGURE_TAGS`` order, each as
        soon as it is ready (the run writes one while the next is drawn); None in place of each
        that the worker failed to send. ``close`` once done."""
        for _ in FIGURE_TAGS:
            try:
                yield pickle.load(self.proc.stdout)
            except (OSError, EOFError, pickle.UnpicklingError):
                yield None

    def close(self) -> None:
        for pipe in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):  # a broken pipe: the worker is gone
                pipe.close()
        self.proc.wait()


def start() -> None:
    """Start the worker for this process's run (if matplotlib is installed)."""
    global _worker
    import importlib.util

    if _worker is None and importlib.util.find_spec("matplotlib") is not None:
        try:
            _worker = FigureWorker()
        except OSError:  # no process to spare: the run draws in-process
            _worker = None


def take() -> FigureWorker | None:
    """The worker ``start`` started, handed to one run (the next gets None)."""
    global _worker
    worker, _worker = _worker, None
    return worker


def _new_figure_with_text():
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1, 1))
    fig.add_subplot().set_title("warm-up")
    return fig


def _send(tag: str, drawn: tuple[int, int, bytes]) -> None:
    pickle.dump((tag, *drawn), sys.stdout.buffer)
    sys.stdout.buffer.flush()


def draw_forked(draw: Callable[[], tuple[int, int, bytes]]
                ) -> Callable[[], tuple[int, int, bytes] | None]:
    """``draw()`` run by a forked copy of this process, beside whatever this one does next;
    returns the function that waits for its result (None when the copy failed, or where there
    is no fork: the caller draws it then)."""
    if not hasattr(os, "fork"):
        return lambda: None
    read, write = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(read)
        os.close(write)
        return lambda: None
    if pid == 0:  # the copy: draw, hand the result over, end without any teardown
        os.close(read)
        with contextlib.suppress(BaseException), os.fdopen(write, "wb") as out:
            os.close(sys.stdout.fileno())  # the run's pipe is the parent's to write
            pickle.dump(draw(), out)
        os._exit(0)
    os.close(write)

    def result() -> tuple[int, int, bytes] | None:
        try:
            with os.fdopen(read, "rb") as got:
                return pickle.load(got)
        except (OSError, EOFError, pickle.UnpicklingError):
            return None
        finally:
            os.waitpid(pid, 0)

    return result


def _serve() -> None:
    # Imported and warmed up (fonts loaded) now, while the run that started us imports torch
    # and trains.
    from logreg_torch.figures import draw_png, render

    render(_new_figure_with_text())

    try:
        probs, targets, names = pickle.load(sys.stdin.buffer)
    except EOFError:  # the run ended without figures (no validation split, an error)
        return
    first, second, third = FIGURE_TAGS
    forked = draw_forked(lambda: draw_png(second, probs, targets, names))
    _send(first, draw_png(first, probs, targets, names))
    last = draw_png(third, probs, targets, names)
    _send(second, forked() or draw_png(second, probs, targets, names))
    _send(third, last)


if __name__ == "__main__":
    _serve()
    # Everything is sent: end without the interpreter's teardown of matplotlib and numpy
    # (50-100 ms here), which the run would wait for in ``close``.
    os._exit(0)
