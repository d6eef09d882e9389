"""scripts/make_dataset.py: the X.npy and y.npy files (or shards of them) that data.streaming
reads, written whole or not at all."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from script_modules import load

from logreg_torch.config import load_config
from logreg_torch.data import prepare_streaming

# ----------------------------------------------------------------------------- make_dataset.py


@pytest.fixture(scope="module")
def make_dataset():
    return load("make_dataset")


def test_make_dataset_writes_x_and_y(tmp_path: Path, make_dataset) -> None:
    make_dataset.main([str(tmp_path / "out"), "--rows", "1000", "--features", "7"])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["X.npy", "y.npy"]
    X, y = np.load(tmp_path / "out" / "X.npy"), np.load(tmp_path / "out" / "y.npy")
    assert X.shape == (1000, 7) and X.dtype == np.float32 and np.isfinite(X).all()
    assert y.shape == (1000,) and set(np.unique(y)) == {0.0, 1.0}
    assert 0.2 < y.mean() < 0.8


def test_make_dataset_writes_shards(tmp_path: Path, make_dataset) -> None:
    out = tmp_path / "out"
    make_dataset.main([str(out), "--rows", "1000", "--features", "4", "--shard-rows", "300"])
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"{a}-{i:05d}.npy" for a in "Xy" for i in range(4)]
    sizes = [len(np.load(out / f"y-{i:05d}.npy")) for i in range(4)]
    assert sizes == [300, 300, 300, 100]
    X = np.concatenate([np.load(out / f"X-{i:05d}.npy") for i in range(4)])
    y = np.concatenate([np.load(out / f"y-{i:05d}.npy") for i in range(4)])
    assert X.shape == (1000, 4) and set(np.unique(y)) == {0.0, 1.0}
    # Streaming reads the shards as one data set.
    cfg = load_config(None, ["data.source=npy", f"data.path={out}", "data.streaming=true",
                             "data.chunk_size=128"])
    stream, _ = prepare_streaming(cfg.data, seed=0)
    assert stream.offsets.tolist() == [0, 300, 600, 900, 1000]
    np.testing.assert_array_equal(stream.take(np.arange(1000)), X.astype(np.float64))


def test_make_dataset_replaces_files_atomically(tmp_path: Path, make_dataset,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    make_dataset.main([str(out), "--rows", "100", "--features", "3"])
    before = (out / "X.npy").read_bytes()

    def torn_save(f, array) -> None:  # a crash halfway through writing
        f.write(b"\x93NUMPY half a file")
        raise OSError("disk full")

    with monkeypatch.context() as patch, pytest.raises(OSError, match="disk full"):
        patch.setattr(make_dataset.np, "save", torn_save)
        make_dataset.main([str(out), "--rows", "100", "--features", "3", "--seed", "5"])
    # The old X.npy is whole; nothing half-written took its name.
    assert (out / "X.npy").read_bytes() == before
    make_dataset.main([str(out), "--rows", "100", "--features", "3", "--seed", "5"])
    assert (out / "X.npy").read_bytes() != before
    assert sorted(p.name for p in out.iterdir()) == ["X.npy", "y.npy"]  # no temp files left
