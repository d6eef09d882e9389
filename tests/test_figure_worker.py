"""logreg_torch/figure_worker.py: the figures drawn by a second process are the figures drawn
in this one, pixel for pixel; a worker that fails leaves the run to draw them itself."""

from __future__ import annotations

import numpy as np
import pytest

from logreg_torch import figure_worker
from logreg_torch.figures import draw_all
from logreg_torch.tracking import figures_available

pytestmark = pytest.mark.skipif(not figures_available(), reason="matplotlib not installed")


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    probs = rng.random(200).astype(np.float32)
    return probs, (rng.random(200) < probs).astype(np.float32)


def test_worker_draws_what_this_process_draws() -> None:
    probs, targets = _data()
    worker = figure_worker.FigureWorker()
    assert worker.send(probs, targets, ("cardigan", "jacket"))
    images = list(worker.receive())
    worker.close()
    assert worker.proc.returncode == 0
    expected = draw_all(probs, targets, ("cardigan", "jacket"))
    assert [tag for tag, _ in images] == [tag for tag, _ in expected]
    for (_, got), (_, want) in zip(images, expected, strict=True):
        assert got.dtype == np.uint8 and got.shape == want.shape and got.shape[0] == 3
        assert np.array_equal(got, want)


def test_worker_that_dies_gives_none_and_one_not_used_ends() -> None:
    worker = figure_worker.FigureWorker()
    worker.proc.kill()
    worker.proc.wait()
    sent = worker.send(*_data(), ("0", "1"))
    assert not sent or list(worker.receive()) == [None, None, None]  # drawn in-process then
    idle = figure_worker.FigureWorker()
    idle.close()  # its input closes: it ends without drawing
    assert idle.proc.returncode == 0


def test_start_and_take_hand_one_worker_to_one_run() -> None:
    figure_worker.start()
    worker = figure_worker.take()
    assert worker is not None and figure_worker.take() is None
    worker.close()


def test_worker_process_imports_no_torch() -> None:
    """It starts beside a run that is importing torch: it must not import torch too."""
    import subprocess
    import sys

    code = ("import sys, logreg_torch.figure_worker as w, logreg_torch.figures as f\n"
            "f.render(w._new_figure_with_text())\nassert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_figures_a_worker_did_not_send_are_drawn_by_the_run() -> None:
    """A worker that sends the first figure and dies: the run draws the other two."""
    import contextlib

    from logreg_torch.report import _log_figures

    probs, targets = _data()
    expected = draw_all(probs, targets, ("0", "1"))

    class Worker:
        closed = False

        def receive(self):
            yield expected[0]
            yield None
            yield None

        def close(self):
            self.closed = True

    class Logger:
        images: list = []

        def timed(self, part):
            return contextlib.nullcontext()

        def log_image(self, tag, image, step):
            self.images.append((tag, image, step))

    logger, worker = Logger(), Worker()
    _log_figures(logger, (probs, targets, ("0", "1"), worker), step=4)
    assert worker.closed and [(t, s) for t, _, s in logger.images] == [
        (tag, 4) for tag, _ in expected]
    assert all(np.array_equal(got, want) for (_, got, _), (_, want) in zip(
        logger.images, expected, strict=True))
