"""Tests for logreg_torch/data/splits.py: seeded train/val/test splits and their errors."""

from __future__ import annotations

import numpy as np
import pytest
from test_data_sources import csv_cfg, write  # tests/ is on sys.path

from logreg_torch.config import DataConfig
from logreg_torch.data import (
    DataError,
    load_table,
    split,
)

# ----------------------------------------------------------------------------- split

def make_table(n=100, seed=0):
    cfg = DataConfig(source="synthetic", n_samples=n, n_features=3, n_informative=2)
    table = load_table(cfg, seed=seed)
    table.X[:, 0] = np.arange(n)  # a row id, to check disjointness
    return table


def test_split_sizes_disjoint_and_seeded():
    table = make_table(1000)
    s = split(table, 0.2, 0.1, seed=7)
    assert [len(p[1]) for p in (s.train, s.val, s.test)] == [700, 200, 100]
    ids = [set(p[0][:, 0]) for p in (s.train, s.val, s.test)]
    assert set.union(*ids) == set(range(1000)) and sum(map(len, ids)) == 1000
    again, other = split(table, 0.2, 0.1, seed=7), split(table, 0.2, 0.1, seed=8)
    np.testing.assert_array_equal(s.val[0], again.val[0])
    assert not np.array_equal(s.val[0], other.val[0])


def test_zero_fraction_gives_empty_split():
    s = split(make_table(), 0.0, 0.0, seed=0)
    assert s.val[0].shape == (0, 3) and s.test[1].shape == (0,) and len(s.train[0]) == 100


@pytest.mark.parametrize(("val", "test", "message"), [
    (0.01, 0.0, "data.val_fraction=0.01 of 20 rows gives an empty split"),
    (0.0, 0.02, "data.test_fraction=0.02 of 20 rows gives an empty split"),
    (1.0, 0.0, "data.val_fraction=1.0 must be at least 0 and below 1"),
    (0.2, -0.1, "data.test_fraction=-0.1 must be at least 0 and below 1"),
    (0.6, 0.4, "leave no training rows out of 20"),
])
def test_split_errors(val, test, message):
    with pytest.raises(DataError, match=message):
        split(make_table(20), val, test, seed=0)


def test_split_single_class_train_is_an_error(tmp_path):
    path = write(tmp_path, "a,label\n" + "1,x\n" * 9 + "2,y\n")
    table = load_table(csv_cfg(path), seed=0)
    with pytest.raises(DataError, match="training split .* holds a single class"):
        # With 1 of 10 rows in class y, some seed puts it outside the train split.
        for seed in range(50):
            split(table, 0.5, 0.0, seed)
