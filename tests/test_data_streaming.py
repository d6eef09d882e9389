"""data.streaming: training from memory-mapped .npy files a chunk at a time.

Streaming must train the same model as in memory (same objective, chunk by chunk), fit the
standardizer in one pass with numpy's numbers, and turn bad input into one clear line.
scripts/make_dataset.py writes the files (test_make_dataset.py); the memory cap that the
in-memory path cannot stay under is in test_data_streaming_memory.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from data_streaming_helpers import weights

from logreg_torch.config import ConfigError, load_config
from logreg_torch.data import (
    DataError,
    fit_standardizer,
    fit_standardizer_streaming,
    prepare,
    prepare_streaming,
    split_indices,
)
from logreg_torch.train import fit

pytestmark = pytest.mark.usefixtures("no_figures")

N, D = 3001, 6
CHUNK = 700  # 3001 rows at val 0.1 / test 0.1 leave 2401 training rows: 3 full chunks + 301
# fp64 full-batch L-BFGS, so that "the same model" can be checked to rounding error.
LBFGS64 = ("data.source=npy", "optim.name=lbfgs", "train.batch_size=null",
           "train.precision=fp64", "loss.l2=0.001", "optim.lr=1", "train.epochs=2",
           "data.val_fraction=0.1", "data.test_fraction=0.1", f"data.chunk_size={CHUNK}",
           "log.histogram_every=0")


def arrays(n: int = N, d: int = D, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Features with offsets and scales far from standard (so standardization matters) and
    labels from a noisy linear rule (so the weights are not trivial)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) * rng.uniform(0.5, 20, d) + rng.uniform(-50, 50, d)
    z = (X - X.mean(0)) / X.std(0)
    y = (z @ rng.standard_normal(d) + rng.standard_normal(n) > 0).astype(np.float64)
    return X, y


def write_folder(path: Path, X: np.ndarray, y: np.ndarray) -> Path:
    path.mkdir(parents=True)
    np.save(path / "X.npy", X)
    np.save(path / "y.npy", y)
    return path


def write_shards(path: Path, X: np.ndarray, y: np.ndarray, sizes: list[int]) -> Path:
    path.mkdir(parents=True)
    bounds = np.cumsum([0, *sizes])
    assert bounds[-1] == len(X)
    for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        np.save(path / f"X-{i:05d}.npy", X[lo:hi])
        np.save(path / f"y-{i:05d}.npy", y[lo:hi])
    return path


def run(tmp_path: Path, data: Path, *overrides: str, name: str):
    cfg = load_config(None, [*LBFGS64, f"data.path={data}",
                             f"log.run_dir={tmp_path / 'runs' / name}", *overrides])
    return fit(cfg)


# ----------------------------------------------------------------------------- same model


@pytest.mark.parametrize("standardize", [True, False])
def test_streaming_trains_the_in_memory_model(tmp_path: Path, standardize: bool) -> None:
    X, y = arrays()
    data = write_folder(tmp_path / "data", X, y)
    flag = f"data.standardize={str(standardize).lower()}"
    memory = run(tmp_path, data, flag, "data.streaming=false", name="memory")
    stream = run(tmp_path, data, flag, "data.streaming=true", name="stream")

    # Far from the start (so a wrong objective would show), equal to rounding error. Without
    # standardization the bias is about 90 and the problem ill-conditioned: hence the rtol.
    assert weights(memory).abs().max() > 0.5
    torch.testing.assert_close(weights(stream), weights(memory), rtol=1e-9, atol=1e-10)
    for key in ("val/loss", "val/roc_auc"):
        assert stream.history[-1][key] == pytest.approx(memory.history[-1][key], abs=1e-10)
    assert stream.test["loss"] == pytest.approx(memory.test["loss"], abs=1e-10)


def test_streaming_val_test_and_statistics_match_prepare(tmp_path: Path) -> None:
    X, y = arrays()
    # Chunks of 128: the 300 val and 300 test rows are read in three pieces each.
    cfg = load_config(None, [*LBFGS64, f"data.path={write_folder(tmp_path / 'd', X, y)}",
                             "data.chunk_size=128"])
    memory = prepare(cfg.data, seed=0, dtype=torch.float64)
    stream, streamed = prepare_streaming(cfg.data, seed=0, dtype=torch.float64)

    train, val, test = split_indices(N, 0.1, 0.1, seed=0)
    np.testing.assert_array_equal(stream.train, train)
    assert len(streamed.train[0]) == 0 and streamed.train[0].shape[1] == D
    assert [len(rows) for rows in stream.chunks()] == [128] * 18 + [97]
    np.testing.assert_allclose(streamed.preprocessing["mean"], X[train].mean(0), rtol=1e-13)
    np.testing.assert_allclose(streamed.preprocessing["std"], X[train].std(0), rtol=1e-13)
    for a, b in ((streamed.val, memory.val), (streamed.test, memory.test)):
        torch.testing.assert_close(a[0], b[0], rtol=0, atol=1e-12)
        assert torch.equal(a[1], b[1])


def test_shards_train_the_model_of_one_file_holding_the_same_rows(tmp_path: Path) -> None:
    X, y = arrays()
    one = write_folder(tmp_path / "one", X, y)
    # Uneven shards; chunks of 700 training rows straddle their boundaries.
    shards = write_shards(tmp_path / "shards", X, y, [1000, 1, 1499, 501])
    single = run(tmp_path, one, "data.streaming=true", name="one")
    sharded = run(tmp_path, shards, "data.streaming=true", name="shards")
    memory = run(tmp_path, one, "data.streaming=false", name="memory")

    # Same rows in the same chunks: the very same floating-point operations.
    assert torch.equal(weights(sharded), weights(single))
    torch.testing.assert_close(weights(sharded), weights(memory), rtol=0, atol=1e-10)


def test_streaming_newton_accumulates_the_hessian_chunk_by_chunk(tmp_path: Path) -> None:
    # Four chunks of rows: value, gradient and Hessian summed over them must give the
    # in-memory Newton solve, to rounding.
    X, y = arrays()
    data = write_folder(tmp_path / "data", X, y)
    newton = ("optim.name=newton", "optim.tol=1e-11")
    memory = run(tmp_path, data, *newton, "data.streaming=false", name="memory")
    stream = run(tmp_path, data, *newton, "data.streaming=true", name="stream")
    assert memory.ending.kind == stream.ending.kind == "converged"
    assert stream.ending.iterations == memory.ending.iterations <= 15
    torch.testing.assert_close(weights(stream), weights(memory), rtol=1e-10, atol=1e-11)


# ----------------------------------------------------------------------------- standardizer


def test_one_pass_standardizer_matches_numpy_on_uneven_chunks() -> None:
    rng = np.random.default_rng(1)
    # Large offsets and small spreads are where a one-pass sum of squares would lose digits.
    X = rng.standard_normal((5000, 5)) * [1e-3, 1.0, 30.0, 2.0, 0.1] + [1e4, -3.0, 0.0, 7e2, 5.0]
    X[:, 3] = 7e2 + 0.25  # a constant column
    cuts = [0, 1, 1, 38, 1024, 1025, 3000, 4999, 5000]  # sizes 1, 0, 37, 986, 1, ..., 1
    chunks = (X[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True))
    stats = fit_standardizer_streaming(chunks, width=5)

    expected_std = X.std(0, ddof=0)
    expected_std[3] = 1.0
    assert stats["std"][3] == 1.0

    def check(stats: dict) -> None:
        np.testing.assert_allclose(stats["mean"], X.mean(0), rtol=1e-12, atol=0)
        np.testing.assert_allclose(stats["std"][1:], expected_std[1:], rtol=1e-12, atol=0)
        # Column 0 (mean / std = 1e7) carries rounding of eps * 1e7 relative in any method;
        # a one-pass sum of squares would lose every digit of it, the pairwise merge keeps 9.
        np.testing.assert_allclose(stats["std"][0], expected_std[0], rtol=1e-9, atol=0)

    check(stats)
    # The two-pass in-memory standardizer agrees, in whatever chunks it reads.
    for chunk_size in (97, 65536):
        check(fit_standardizer(X, chunk_size))


# ----------------------------------------------------------------------------- bad input


def fit_error(tmp_path: Path, *overrides: str) -> str:
    cfg = load_config(None, ["data.streaming=true", "log.histogram_every=0", "train.epochs=1",
                             f"log.run_dir={tmp_path / 'runs'}", *overrides])
    with pytest.raises((DataError, ConfigError)) as info:
        fit(cfg)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("source", ["synthetic", "jackets", "csv"])
def test_streaming_needs_the_npy_source(tmp_path: Path, source: str) -> None:
    extra = [f"data.path={tmp_path / 'x.csv'}", "data.target=label"] if source == "csv" else []
    message = fit_error(tmp_path, f"data.source={source}", *extra)
    assert "data.streaming" in message and "npy" in message and source in message


def test_streaming_path_must_be_a_folder_with_x(tmp_path: Path) -> None:
    X, y = arrays(50, 3)
    folder = write_folder(tmp_path / "data", X, y)
    message = fit_error(tmp_path, "data.source=npy", f"data.path={folder / 'X.npy'}")
    assert str(folder / "X.npy") in message and "folder" in message

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no arrays here")
    message = fit_error(tmp_path, "data.source=npy", f"data.path={empty}")
    assert str(empty) in message and "X.npy" in message and "X-*.npy" in message

    message = fit_error(tmp_path, "data.source=npy", f"data.path={tmp_path / 'missing'}")
    assert str(tmp_path / "missing") in message


def test_shards_must_pair_up_and_agree_on_features(tmp_path: Path) -> None:
    X, y = arrays(60, 3)
    lonely = write_shards(tmp_path / "lonely", X, y, [30, 30])
    (lonely / "y-00001.npy").unlink()
    message = fit_error(tmp_path, "data.source=npy", f"data.path={lonely}")
    assert "X-00001.npy" in message and "y-00001.npy" in message

    mixed = write_shards(tmp_path / "mixed", X, y, [30, 30])
    np.save(mixed / "X-00001.npy", np.hstack([X[30:], X[30:, :1]]))  # 4 features, not 3
    message = fit_error(tmp_path, "data.source=npy", f"data.path={mixed}")
    assert "X-00001.npy" in message and "(30, 4)" in message and "3" in message

    short = write_shards(tmp_path / "short", X, y, [30, 30])
    np.save(short / "y-00001.npy", y[30:59])  # one label short
    message = fit_error(tmp_path, "data.source=npy", f"data.path={short}")
    assert "X-00001.npy" in message and "(29,)" in message


@pytest.mark.parametrize("standardize", ["true", "false"])
@pytest.mark.parametrize("layout", ["one file", "shards"])
def test_nan_in_a_later_training_chunk_names_its_row_and_column(
        tmp_path: Path, standardize: str, layout: str) -> None:
    X, y = arrays()
    train, _, _ = split_indices(N, 0.1, 0.1, seed=0)
    row = int(train[2 * CHUNK + 123])  # in the third chunk of training rows
    X[row, 4] = np.nan
    folder = (write_folder(tmp_path / "d", X, y) if layout == "one file"
              else write_shards(tmp_path / "d", X, y, [1000, 2001]))
    message = fit_error(tmp_path, *LBFGS64, f"data.path={folder}",
                        f"data.standardize={standardize}")
    assert f"row index {row}, column index 4" in message and "nan" in message
    assert str(folder) in message
