"""logreg_torch/figure_worker.py: the figures drawn by a second process are the figures drawn
in this one, pixel for pixel, encoded as SummaryWriter.add_image encodes them; a worker that
fails, or a forked copy of it that fails, leaves the figure to be drawn by the one before."""

from __future__ import annotations

import numpy as np
import pytest

from logreg_torch import figure_worker
from logreg_torch.figures import draw_all, encode_png
from logreg_torch.tracking import figures_available

pytestmark = pytest.mark.skipif(not figures_available(), reason="matplotlib not installed")


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    probs = rng.random(200).astype(np.float32)
    return probs, (rng.random(200) < probs).astype(np.float32)


def _decoded(png: bytes) -> np.ndarray:
    import io

    from PIL import Image

    return np.moveaxis(np.asarray(Image.open(io.BytesIO(png)).convert("RGB")), 2, 0)


def test_worker_draws_what_this_process_draws() -> None:
    """The PNGs it sends hold draw_all's pixels and are the bytes add_image writes for them."""
    from torch.utils.tensorboard.summary import image as image_summary

    probs, targets = _data()
    worker = figure_worker.FigureWorker()
    assert worker.send(probs, targets, ("cardigan", "jacket"))
    sent = list(worker.receive())
    worker.close()
    assert worker.proc.returncode == 0
    expected = draw_all(probs, targets, ("cardigan", "jacket"))
    assert [s[0] for s in sent] == [tag for tag, _ in expected]
    for (tag, height, width, png), (_, want) in zip(sent, expected, strict=True):
        assert (3, height, width) == want.shape
        assert np.array_equal(_decoded(png), want)
        written = image_summary(tag, want, dataformats="CHW").value[0].image
        assert png == written.encoded_image_string == encode_png(want)
        assert (written.height, written.width, written.colorspace) == (height, width, 3)


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
    expected = [(tag, image.shape[1], image.shape[2], encode_png(image))
                for tag, image in draw_all(probs, targets, ("0", "1"))]

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

        def log_png(self, tag, png, height, width, step):
            self.images.append((tag, height, width, png, step))

    logger, worker = Logger(), Worker()
    _log_figures(logger, (probs, targets, ("0", "1"), worker), step=4)
    assert worker.closed
    assert logger.images == [(*figure, 4) for figure in expected]


def _in_a_process_without_torch(code: str) -> None:
    """Forking this pytest process (torch's threads running) is not what the worker does:
    run the fork in a fresh interpreter, as the worker runs."""
    import subprocess
    import sys

    head = ("import os, sys, numpy as np\n"
            "from logreg_torch import figure_worker as w\n"
            "from logreg_torch.figures import draw_png\n"
            "p = np.linspace(0, 1, 50); t = (p > 0.4).astype(np.float32)\n")
    subprocess.run([sys.executable, "-c", head + code], check=True, timeout=120)


def test_a_forked_copy_draws_the_figure_this_process_draws() -> None:
    _in_a_process_without_torch(
        "tag = 'val/probability_histogram'\n"
        "wait = w.draw_forked(lambda: (os.getpid(), draw_png(tag, p, t, ('0', '1'))))\n"
        "pid, drawn = wait()\n"
        "assert pid != os.getpid() and drawn == draw_png(tag, p, t, ('0', '1'))\n")


def test_a_forked_copy_that_fails_gives_none() -> None:
    _in_a_process_without_torch(
        "assert w.draw_forked(lambda: os._exit(3))() is None\n"
        "assert w.draw_forked(lambda: 1 / 0)() is None\n"
        "del os.fork\n"
        "assert w.draw_forked(lambda: 1)() is None\n")
