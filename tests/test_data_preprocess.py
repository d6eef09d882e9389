"""Tests for logreg_torch/data/preprocess.py: the standardizer, fitted on train only."""

from __future__ import annotations

import io

import numpy as np
import torch

from logreg_torch.config import DataConfig
from logreg_torch.data import (
    apply_standardizer,
    fit_standardizer,
    load_table,
    prepare,
    split,
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
