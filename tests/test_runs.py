"""What a run leaves on disk: checkpoints holding the whole state, the run folder, and a
checkpoint written before the code was split by concern, resumed."""

from __future__ import annotations

import dataclasses
import math
import re
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from test_fit import (  # tests/ is on sys.path under pytest
    CONFIGS,
    N_TRAIN,
    TINY,
    bitwise_equal,
    config,
    params,
)

from logreg_torch.checkpoint import load_checkpoint
from logreg_torch.config import load_config
from logreg_torch.data import prepare
from logreg_torch.train import (
    fit,
)

pytestmark = pytest.mark.usefixtures("no_figures")

# ----------------------------------------------------------------------------- checkpoints


def test_last_and_best_checkpoints_hold_the_whole_state(tmp_path) -> None:
    cfg = config(tmp_path, "train.epochs=4", "optim.lr=0.2")
    result = fit(cfg)
    data = prepare(cfg.data, cfg.train.seed)
    for name in ("last.pt", "best.pt"):
        path = result.run_dir / name
        state = torch.load(path, map_location="cpu", weights_only=True)
        for key in ("model", "optimizer", "scheduler", "epoch", "step", "rng", "config",
                    "preprocessing", "label_map"):
            assert key in state, f"{name} lacks {key}"
        assert state["config"] == dataclasses.asdict(cfg)
        assert state["preprocessing"] == data.preprocessing
        assert state["label_map"] == data.label_map
        assert state["optimizer"]["state"], "optimizer state (Adam moments) is missing"
        assert isinstance(state["rng"]["torch"], torch.Tensor)
        assert load_checkpoint(path)["epoch"] == state["epoch"]

    last = torch.load(result.run_dir / "last.pt", weights_only=True)
    assert last["epoch"] == 4 and last["step"] == 4 * math.ceil(N_TRAIN / 48)
    for key, value in result.model.state_dict().items():
        assert torch.equal(last["model"][key], value)

    best = torch.load(result.run_dir / "best.pt", weights_only=True)
    val_losses = [r["val/loss"] for r in result.history]
    assert best["epoch"] == 1 + int(np.argmin(val_losses)) == result.best["epoch"]

# ----------------------------------------------------------------------------- run folder


def test_default_run_folder_and_saved_config(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = load_config(None, [*TINY, "train.epochs=1", "log.name=tiny"])
    result = fit(cfg)
    assert re.fullmatch(r"tiny-\d{8}-\d{6}", result.run_dir.name)
    assert result.run_dir.parent == Path("runs")
    assert (tmp_path / result.run_dir / "last.pt").is_file()
    assert load_config(result.run_dir / "config.yaml") == cfg


def test_two_runs_in_the_same_second_get_different_folders(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(time, "strftime", lambda fmt, *args: "20250101-120000")
    cfg = load_config(None, [*TINY, "train.epochs=1", "log.name=same"])
    first, second = fit(cfg), fit(cfg)
    assert first.run_dir.name == "same-20250101-120000"
    assert second.run_dir.name == "same-20250101-120000-2"
    assert (tmp_path / first.run_dir / "last.pt").is_file()
    assert (tmp_path / second.run_dir / "last.pt").is_file()


# ----------------------------------------------------------------------------- old checkpoints

# Written by the code before train.py/data.py/config.py were split by concern (commit 3310af3):
# `logreg-torch train configs/default.yaml train.epochs=3 log.run_dir=... log.histogram_every=0`.
PRE_SPLIT = Path(__file__).resolve().parent / "fixtures" / "pre_split_last.pt"


def test_a_checkpoint_from_before_the_split_resumes_and_trains_on(tmp_path) -> None:
    import shutil

    old = tmp_path / "old" / "last.pt"
    old.parent.mkdir()
    shutil.copy(PRE_SPLIT, old)
    state = load_checkpoint(old)
    assert state["epoch"] == 3
    # On the CPU, where the checkpoint was written: the comparison is bit for bit.
    common = [f"{CONFIGS / 'default.yaml'}", "train.epochs=5", "log.histogram_every=0",
              "train.device=cpu"]
    resumed = fit(load_config(common[0], [*common[1:], f"log.run_dir={tmp_path / 'resumed'}",
                                          f"train.resume={old}"]))
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3, 4, 5]
    assert resumed.history[:3] == state["history"]
    assert load_checkpoint(tmp_path / "resumed" / "last.pt")["epoch"] == 5
    # It goes on exactly as an uninterrupted run of the same config would have.
    full = fit(load_config(common[0], [*common[1:], f"log.run_dir={tmp_path / 'full'}"]))
    if full.history[:3] == state["history"]:
        # this CPU's arithmetic is the one that wrote the fixture: bit for bit
        assert bitwise_equal(params(full), params(resumed))
        assert [r["train/loss"] for r in full.history] == [r["train/loss"] for r in resumed.history]
    else:
        # another CPU (another SIMD width in the BLAS kernels) rounds the first three epochs
        # differently from the fixture's machine, so only closeness can hold
        for a, b in zip(params(full), params(resumed), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
