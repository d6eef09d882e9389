"""Progress while training (logreg_torch/progress.py): inside each pass over streamed rows,
rows read, the rate and the time the pass has left; a solver's bar counts iterations and shows
no time left (it stops when it converges, not when its budget is spent)."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from logreg_torch import cli
from logreg_torch.progress import RunBars

pytestmark = pytest.mark.usefixtures("no_figures")


def test_a_pass_counts_the_rows_this_rank_reads() -> None:
    stream = SimpleNamespace(on_pass=None, on_rows=None)
    bars = RunBars(epochs=3, start_epoch=0, solver=None, max_iter=100, start_iter=0,
                   stream=stream, rank=1, world=2)
    try:
        stream.on_pass([700, 700, 700, 301])  # rank 1 reads chunks 1 and 3
        assert (bars.rows.total, bars.rows.n, bars.rows.desc) == (1001, 0, "pass 1: ")
        stream.on_rows(700)
        stream.on_rows(301)
        assert bars.rows.n == bars.rows.total
        stream.on_pass([700, 700, 700, 301])  # the next pass starts from 0
        assert (bars.rows.n, bars.rows.desc) == (0, "pass 2: ")
        bars.epoch_done(0.5, 0.6)
        assert bars.main.n == 1
    finally:
        bars.close()
    assert stream.on_pass is None and stream.on_rows is None  # the stream is left clean


def test_a_solver_bar_counts_iterations_and_shows_no_time_left(capsys) -> None:
    bars = RunBars(epochs=5, start_epoch=0, solver="lbfgs", max_iter=100, start_iter=0)
    try:
        for k in (0, 1, 2, 3):
            bars.iteration(SimpleNamespace(iteration=k, loss=0.5, grad_max=1e-3))
        bars.epoch_done(0.4, 0.45)  # an epoch of a solver moves no iteration
        assert bars.main.n == 3 and bars.main.total == 100
        line = str(bars.main)
    finally:
        bars.close()
    assert "3/100 iterations at most" in line and "<" not in line, line


def test_a_streamed_run_shows_each_pass(tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    data.mkdir()
    X = rng.standard_normal((3000, 4)).astype(np.float32)
    np.save(data / "X.npy", X)
    np.save(data / "y.npy", (X[:, 0] > 0).astype(np.float32))
    assert cli.main(["train", str(Path(__file__).resolve().parents[1] / "configs" /
                                  "default.yaml"), "data.source=npy", f"data.path={data}",
                     "data.streaming=true", "data.chunk_size=500", "train.epochs=2",
                     "log.histogram_every=0", f"log.run_dir={tmp_path / 'run'}"]) == 0
    err = capsys.readouterr().err
    frames = [f for f in re.split(r"[\r\n]", err) if f.startswith("pass ")]
    # 2400 training rows (val 0.2) in chunks of 500, read twice: each pass reaches its total.
    for k in (1, 2):
        last = [f for f in frames if f.startswith(f"pass {k}:")][-1]
        assert "100%" in last and "2.40k/2.40k" in last and "row/s" in last, last
    assert any("<" in f and "%" in f for f in frames)  # the time left in a pass
