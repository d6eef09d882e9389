"""Tests for logreg_torch/data/preprocess.py: the standardizer, fitted on train only."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from logreg_torch.config import DataConfig
from logreg_torch.data import (
    DataError,
    apply_standardizer,
    fit_standardizer,
    load_table,
    onepass,
    prepare,
    split,
    split_indices,
)

# ----------------------------------------------------------------------------- standardization

def test_standardizer_is_fitted_on_train_only():
    cfg = DataConfig(source="jackets", val_fraction=0.25, test_fraction=0.25)
    prepared = prepare(cfg, seed=1)
    raw = split(load_table(cfg, 1), 0.25, 0.25, 1)
    np.testing.assert_allclose(prepared.preprocessing["mean"], raw.train[0].mean(0))
    np.testing.assert_allclose(prepared.preprocessing["std"], raw.train[0].std(0))
    Xtr = prepared.train[0].double()
    np.testing.assert_allclose(Xtr.mean(0), 0, atol=1e-6)
    np.testing.assert_allclose(Xtr.std(0, unbiased=False), 1, atol=1e-5)
    assert prepared.train[0].dtype == prepared.train[1].dtype == torch.float32
    assert prepared.val[0].double().mean(0).abs().max() > 1e-3


def test_constant_column_gets_std_one():
    X = np.array([[0.1, 1.0], [0.1, 2.0], [0.1, 3.0]])
    stats = fit_standardizer(X, chunk_size=2)  # chunks must agree with one pass
    assert stats["std"][0] == 1.0
    np.testing.assert_allclose(stats["mean"], [0.1, 2.0])
    np.testing.assert_allclose(stats["std"][1], np.std([1.0, 2.0, 3.0]))
    np.testing.assert_allclose(apply_standardizer(X, stats)[:, 0], 0, atol=1e-15)


def test_preprocessing_survives_weights_only_load():
    prepared = prepare(DataConfig(source="jackets"), seed=0)
    buffer = io.BytesIO()
    torch.save({"pre": prepared.preprocessing, "labels": prepared.label_map}, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    assert loaded["pre"] == prepared.preprocessing and loaded["pre"]["standardize"] is True
    raw = prepare(DataConfig(source="jackets", standardize=False), seed=0)
    assert raw.preprocessing["mean"] == [0.0] * 7 and raw.preprocessing["std"] == [1.0] * 7


# ----------------------------------------------------------------------------- one pass

def _offset_data(tmp_path, n=1000, d=6, dtype=np.float32):
    """Columns far from standardized (means up to 1e3, scales 1e-2 to 1e3), saved as X.npy."""
    rng = np.random.default_rng(0)
    loc = np.array([0.0, -3.0, 50.0, 1e3, 7.0, -0.5])[:d]
    scale = np.array([1.0, 1e-2, 10.0, 1e3, 0.1, 2.0])[:d]
    X = (loc + scale * rng.standard_normal((n, d))).astype(dtype)
    folder = tmp_path / "npy"
    folder.mkdir()
    np.save(folder / "X.npy", X)
    np.save(folder / "y.npy", (rng.random(n) < 0.5).astype(np.float32))
    return folder, X


def _reference(X, cfg, seed):
    """The float64 two-pass path: fit_standardizer on the train rows, apply_standardizer."""
    train, val, test = split_indices(len(X), cfg.val_fraction, cfg.test_fraction, seed)
    return fit_standardizer(X[train].astype(np.float64)), [X[r] for r in (train, val, test)]


@pytest.mark.parametrize("column_major", [True, False])
def test_one_pass_standardization_equals_the_float64_reference(tmp_path, monkeypatch,
                                                               column_major):
    """prepare reads X.npy once, in chunks (tiny here, so rows of every split meet in one
    chunk), computing float64 statistics as it goes, then standardizes in place.

    Against the two-pass float64 reference (fit_standardizer + apply_standardizer, then the
    cast to float32): the statistics agree to float64 rounding (relative 1e-13 here), and
    each value is computed in float64 and rounded once, so it is the reference's own
    rounding of (x - mean) / std with our statistics, exactly; against the reference's
    statistics, it can differ only where the float64 value lies within ~1e-13 of a float32
    rounding boundary, by one unit in the last place: |ours - ref| <= 2**-23 |ref|.
    """
    monkeypatch.setattr(onepass, "CHUNK_BYTES", 7 * 6 * 4)  # 7 rows a chunk
    monkeypatch.setattr(onepass, "_SLICE", 11)  # several slices per column
    folder, X = _offset_data(tmp_path)
    cfg = DataConfig(source="npy", path=str(folder), val_fraction=0.2, test_fraction=0.1)
    prepared = prepare(cfg, seed=3, column_major=column_major)
    ref_stats, raw = _reference(X, cfg, 3)
    np.testing.assert_allclose(prepared.preprocessing["mean"], ref_stats["mean"], rtol=1e-13,
                               atol=1e-13 * np.abs(X).max())
    np.testing.assert_allclose(prepared.preprocessing["std"], ref_stats["std"], rtol=1e-13)
    for ours, x in zip((prepared.train[0], prepared.val[0], prepared.test[0]), raw,
                       strict=True):
        assert ours.dtype == torch.float32 and ours.shape == x.shape
        same_stats = apply_standardizer(x, prepared.preprocessing).astype(np.float32)
        np.testing.assert_array_equal(ours.numpy(), same_stats)
        reference = apply_standardizer(x, ref_stats).astype(np.float32)
        assert np.all(np.abs(ours.numpy() - reference) <= 2.0**-23 * np.abs(reference))
    assert (prepared.train[0].stride(0) == 1) == column_major  # column-major as asked
    assert prepared.val[0].is_contiguous() and prepared.test[0].is_contiguous()


def test_one_pass_float64_is_the_reference_exactly(tmp_path, monkeypatch):
    monkeypatch.setattr(onepass, "CHUNK_BYTES", 5 * 6 * 8)
    folder, X = _offset_data(tmp_path, dtype=np.float64)
    cfg = DataConfig(source="npy", path=str(folder), val_fraction=0.25)
    prepared = prepare(cfg, seed=0, dtype=torch.float64, column_major=True)
    _, raw = _reference(X, cfg, 0)
    for ours, x in zip((prepared.train[0], prepared.val[0]), raw[:2], strict=True):
        np.testing.assert_array_equal(ours.numpy(), apply_standardizer(x, prepared.preprocessing))
    np.testing.assert_array_equal(prepared.train[1].numpy(),
                                  np.load(folder / "y.npy")[raw_rows(cfg, len(X), 0)])
    # float64 values into a float32 run: standardized in float64, then rounded once
    as32 = prepare(cfg, seed=0, dtype=torch.float32, column_major=True)
    assert as32.train[0].dtype == torch.float32 and as32.train[0].stride(0) == 1
    np.testing.assert_array_equal(
        as32.train[0].numpy(), apply_standardizer(raw[0], as32.preprocessing).astype(np.float32))


def raw_rows(cfg, n, seed):
    return split_indices(n, cfg.val_fraction, cfg.test_fraction, seed)[0]


def test_one_pass_reads_without_mapping_and_names_a_bad_row(tmp_path, monkeypatch):
    """A NaN in a held-out row is found while reading, with its row index in the file; a
    memory map's pages are never touched (reads go through one reused buffer)."""
    monkeypatch.setattr(onepass, "CHUNK_BYTES", 4 * 6 * 4)
    folder, X = _offset_data(tmp_path, n=50)
    cfg = DataConfig(source="npy", path=str(folder), val_fraction=0.2)
    val_row = int(split_indices(50, 0.2, 0.0, 0)[1][3])
    X[val_row, 4] = np.nan
    np.save(folder / "X.npy", X)
    with pytest.raises(DataError, match=f"X holds nan at row index {val_row}, column index 4"):
        prepare(cfg, seed=0)
    table = load_table(cfg, 0, check_finite=False)
    assert isinstance(table.X, np.memmap)
    chunks = list(onepass._row_chunks(table.X, 4))
    assert [start for start, _ in chunks] == list(range(0, 50, 4))
    assert all(not isinstance(c, np.memmap) for _, c in chunks)
    assert len({c.ctypes.data for _, c in chunks}) == 1  # one buffer, refilled
