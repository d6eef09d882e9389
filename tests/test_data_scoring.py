"""Tests for logreg_torch/data/scoring.py: reading rows to score with a checkpoint's columns,
preprocessing and label map."""

from __future__ import annotations

import numpy as np
import pytest
from test_data_sources import write  # tests/ is on sys.path

from logreg_torch.data import (
    DataError,
    read_csv,
    read_features_csv,
    read_labeled,
)

# ----------------------------------------------------------------------------- predict / evaluate

def test_read_features_csv_standardizes_by_name(tmp_path):
    pre = {"standardize": True, "mean": [1.0, 10.0], "std": [2.0, 5.0]}
    path = write(tmp_path, "label,b,extra,a\nyes,20,q,3\nno,10,r,1\n")
    X, rows = read_features_csv(path, ["a", "b"], pre)
    np.testing.assert_allclose(X, [[1.0, 2.0], [0.0, 0.0]])
    assert rows == [["yes", "20", "q", "3"], ["no", "10", "r", "1"]]
    assert read_csv(path).header == ["label", "b", "extra", "a"]
    X, _ = read_features_csv(path, ["a", "b"], {**pre, "standardize": False})
    np.testing.assert_array_equal(X, [[3, 20], [1, 10]])


def test_read_features_csv_errors(tmp_path):
    pre = {"standardize": False, "mean": [0.0, 0.0], "std": [1.0, 1.0]}
    with pytest.raises(DataError) as info:
        read_features_csv(write(tmp_path, "a,c\n1,2\n"), ["a", "b"], pre)
    assert "data.csv: missing column(s) 'b'; the checkpoint expects these columns: a, b" in str(
        info.value)
    with pytest.raises(DataError, match=r"data.csv, line 3, column 'a': not a number: 'oops'"):
        read_features_csv(write(tmp_path, "a,b\n1,2\noops,3\n"), ["a", "b"], pre)


def test_read_labeled_uses_stored_label_map(tmp_path):
    pre = {"standardize": False, "mean": [0.0], "std": [1.0]}
    label_map = {"cardigan": 0, "jacket": 1}
    X, y = read_labeled(write(tmp_path, "a,purchase\n1,jacket\n2,jacket\n"), "purchase", ["a"],
                        label_map, pre)
    np.testing.assert_array_equal(y, [1, 1])  # one class is fine when evaluating
    with pytest.raises(DataError, match=r"line 3, column 'purchase': label 'scarf' is not one"):
        read_labeled(write(tmp_path, "a,purchase\n1,jacket\n2,scarf\n"), "purchase", ["a"],
                     label_map, pre)
    with pytest.raises(DataError, match="no target column 'purchase'; columns are: a, y"):
        read_labeled(write(tmp_path, "a,y\n1,jacket\n"), "purchase", ["a"], label_map, pre)
    _, y = read_labeled(write(tmp_path, "a,t\n1,1.0\n2,0\n"), "t", ["a"], {"0": 0, "1": 1}, pre)
    np.testing.assert_array_equal(y, [1, 0])
