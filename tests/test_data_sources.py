"""Tests for logreg_torch.data's sources: bundled sets, CSV, npy and synthetic data, labels,
and every bad input. Splits, standardization and scoring have test_data_*.py of their own."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from logreg_torch.config import DataConfig
from logreg_torch.data import (
    DataError,
    default_positive_label,
    load_table,
    prepare,
)


def write(tmp_path, text, name="data.csv", encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def csv_cfg(path, **kw):
    return DataConfig(source="csv", path=str(path), target=kw.pop("target", "label"), **kw)


def load_error(cfg):
    with pytest.raises(DataError) as info:
        load_table(cfg, seed=0)
    return str(info.value)


GOOD = "a,b,label\n1,2,yes\n3,4,no\n5,6,yes\n7,8,no\n"


# ----------------------------------------------------------------------------- bundled sets

def test_jackets_loads_with_jacket_as_class_1():
    table = load_table(DataConfig(source="jackets"), seed=0)
    assert table.X.shape == (1000, 7) and table.X.dtype == np.float64
    assert table.label_map == {"cardigan": 0, "jacket": 1}
    assert table.feature_names == ["age", "income_k", "visits_last_month", "avg_basket_eur",
                                   "days_since_last_visit", "lives_in_cold_region",
                                   "outdoor_interest_score"]
    assert set(np.unique(table.y)) == {0.0, 1.0}
    assert 0.4 < table.y.mean() < 0.6


def logistic_accuracy(X_train, y_train, X_test, y_test):
    """Held-out accuracy of a (slightly ridged) logistic regression fitted by Newton steps; here
    rather than sklearn.linear_model, whose import alone costs seconds."""
    A, w = np.c_[X_train, np.ones(len(X_train))], np.zeros(X_train.shape[1] + 1)
    for _ in range(30):
        p = 1 / (1 + np.exp(-A @ w))
        hessian = A.T @ (A * (p * (1 - p))[:, None]) + 1e-3 * np.eye(len(w))
        w -= np.linalg.solve(hessian, A.T @ (p - y_train) + 1e-3 * w)
    return np.mean((np.c_[X_test, np.ones(len(X_test))] @ w > 0) == y_test)


def test_jackets_is_learnable_but_not_trivially():
    prepared = prepare(DataConfig(source="jackets", val_fraction=0.3), seed=0)
    (Xtr, ytr), (Xva, yva) = prepared.train, prepared.val
    assert 0.75 <= logistic_accuracy(Xtr.double().numpy(), ytr.numpy(), Xva.numpy(),
                                     yva.numpy()) <= 0.9


def test_breast_cancer_equals_sklearn():
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    table = load_table(DataConfig(source="breast_cancer"), seed=0)
    assert table.X.shape == (569, 30)
    np.testing.assert_allclose(table.X, bunch.data, rtol=0, atol=1e-12)
    assert table.feature_names == [n.replace(" ", "_") for n in bunch.feature_names]
    # Default rule: "malignant" sorts last, so it is 1; sklearn's target has benign = 1.
    assert table.label_map == {"benign": 0, "malignant": 1}
    np.testing.assert_array_equal(table.y, bunch.target_names[bunch.target] == "malignant")
    flipped = load_table(DataConfig(source="breast_cancer", positive_label="benign"), seed=0)
    np.testing.assert_array_equal(flipped.y, bunch.target)


def test_bundled_set_takes_feature_selection():
    table = load_table(DataConfig(source="jackets", features=["outdoor_interest_score", "age"]), 0)
    assert table.feature_names == ["outdoor_interest_score", "age"] and table.X.shape == (1000, 2)


# ----------------------------------------------------------------------------- labels

@pytest.mark.parametrize(("labels", "positive"), [
    (("0", "1"), "1"), (("1", "0"), "1"), (("0.0", "1.0"), "1.0"), (("-1", "1"), "1"),
    (("2", "10"), "10"), (("false", "true"), "true"), (("TRUE", "false"), "TRUE"),
    (("cardigan", "jacket"), "jacket"), (("yes", "no"), "yes"), (("B", "M"), "M"),
])
def test_default_positive_label(labels, positive):
    assert default_positive_label(labels) == positive


def test_csv_labels_default_and_override(tmp_path):
    path = write(tmp_path, GOOD)
    table = load_table(csv_cfg(path), seed=0)
    assert table.label_map == {"no": 0, "yes": 1}
    np.testing.assert_array_equal(table.y, [1, 0, 1, 0])
    table = load_table(csv_cfg(path, positive_label="no"), seed=0)
    assert table.label_map == {"yes": 0, "no": 1}
    np.testing.assert_array_equal(table.y, [0, 1, 0, 1])


def test_numeric_positive_label_matches_by_value(tmp_path):
    path = write(tmp_path, "a,label\n1,0\n2,1\n3,0\n")
    table = load_table(csv_cfg(path, positive_label="0.0"), seed=0)
    assert table.label_map == {"1": 0, "0": 1}
    np.testing.assert_array_equal(table.y, [1, 0, 1])


def test_csv_quoted_fields_bom_blank_lines_and_column_order(tmp_path):
    path = write(tmp_path, '\ufeff"a","b, with comma",label\n"1.5",2,yes\n\n3,"4",no\n',
                 encoding="utf-8")
    table = load_table(csv_cfg(path, features=["b, with comma", "a"]), seed=0)
    assert table.feature_names == ["b, with comma", "a"]
    np.testing.assert_array_equal(table.X, [[2, 1.5], [4, 3]])


# ----------------------------------------------------------------------------- npy and synthetic

def test_npy_folder_is_memory_mapped(tmp_path):
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((50, 3)).astype(np.float32), rng.integers(0, 2, 50)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    table = load_table(DataConfig(source="npy", path=str(tmp_path)), seed=0)
    assert isinstance(table.X, np.memmap) and table.X.dtype == np.float32
    np.testing.assert_array_equal(table.X, X)
    np.testing.assert_array_equal(table.y, y)
    assert table.label_map == {"0": 0, "1": 1} and table.feature_names == ["x0", "x1", "x2"]
    prepared = prepare(DataConfig(source="npy", path=str(tmp_path), val_fraction=0.2), seed=0)
    assert prepared.train[0].shape == (40, 3) and prepared.val[0].dtype == torch.float32


def test_npz_file_with_string_labels(tmp_path):
    X = np.arange(12.0).reshape(6, 2)
    np.savez(tmp_path / "d.npz", X=X, y=np.array(["neg", "pos"] * 3))
    table = load_table(DataConfig(source="npy", path=str(tmp_path / "d.npz")), seed=0)
    np.testing.assert_array_equal(table.X, X)
    assert table.label_map == {"neg": 0, "pos": 1}
    np.testing.assert_array_equal(table.y, [0, 1] * 3)


def test_synthetic_is_seeded_and_respects_weights():
    cfg = DataConfig(source="synthetic", n_samples=2000, n_features=8, n_informative=3,
                     weights=[0.8, 0.2])
    a, b = load_table(cfg, seed=3), load_table(cfg, seed=3)
    assert a.X.shape == (2000, 8) and a.feature_names[0] == "x0"
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.y, b.y)
    assert not np.array_equal(a.X, load_table(cfg, seed=4).X)
    assert a.y.mean() == pytest.approx(0.2, abs=0.01)
    assert a.label_map == {"0": 0, "1": 1}
    one = load_table(replace(cfg, n_informative=1, weights=None), seed=0)
    assert one.y.mean() == pytest.approx(0.5, abs=0.01)


def test_synthetic_separation_grows_with_class_sep():
    def accuracy(sep):
        t = load_table(DataConfig(source="synthetic", n_samples=600, class_sep=sep), seed=0)
        return logistic_accuracy(t.X[:400], t.y[:400], t.X[400:], t.y[400:])

    assert accuracy(0.2) < 0.7 < 0.8 < accuracy(2.0)


# ----------------------------------------------------------------------------- bad CSV input

@pytest.mark.parametrize(("text", "cfg_kw", "parts"), [
    ("", {}, ["data.csv: file is empty"]),
    ("\n\n", {}, ["file is empty"]),
    ("a,b,label\n", {}, ["data.csv: empty data set"]),
    ("a,b,y\n1,2,3\n", {}, ["no target column 'label'", "columns are: a, b, y"]),
    (GOOD, {"features": ["a", "zz"]}, ["data.csv, column 'zz'", "no such column"]),
    (GOOD, {"features": ["a", "label"]}, ["column 'label'", "cannot also be a feature"]),
    ("a,b,label\n1,2,yes\n3,4\n", {}, ["data.csv, line 3: row has 2 fields, header has 3"]),
    ("a,b,label\n1,2,yes\n3,x4,no\n", {}, ["line 3, column 'b': not a number: 'x4'"]),
    ("a,b,label\n1,,yes\n3,4,no\n", {}, ["line 2, column 'b': missing value"]),
    ("a,b,label\n1,2,yes\n3,nan,no\n", {}, ["line 3, column 'b'", "'nan' is not a finite"]),
    ("a,b,label\n1,2,yes\n-inf,4,no\n", {}, ["line 3, column 'a'", "'-inf' is not a finite"]),
    ('a,b,note,label\n1,2,"two\nlines",yes\n3,?,,no\n', {"features": ["a", "b"]},
     ["line 4, column 'b'", "'?'"]),
    ("a,b,label\n1,2,yes\n3,4,\n", {}, ["line 3, column 'label': missing target value"]),
    ("a,b,label\n1,2,x\n3,4,y\n5,6,z\n7,8,w\n", {},
     ["target column 'label' must hold exactly two distinct values, found 4: 'w', 'x'"]),
    ("a,b,label\n1,2,x\n3,4,x\n", {}, ["target column 'label' holds a single class 'x'"]),
    (GOOD, {"positive_label": "maybe"},
     ["data.positive_label='maybe' is not a label", "'no' and 'yes'"]),
    ("a,,label\n1,2,x\n", {}, ["line 1: column 2 of the header has no name"]),
    ("a,a,label\n1,2,x\n", {}, ["line 1, column 'a': column name appears twice"]),
    ("label\nx\ny\n", {}, ["no feature columns"]),
])
def test_bad_csv(tmp_path, text, cfg_kw, parts):
    message = load_error(csv_cfg(write(tmp_path, text), **cfg_kw))
    assert "\n" not in message
    for part in parts:
        assert part in message


def test_missing_file_and_folder(tmp_path):
    assert "nope.csv: file not found" in load_error(csv_cfg(tmp_path / "nope.csv"))
    assert "is a folder, expected a CSV file" in load_error(csv_cfg(tmp_path))


def test_not_utf8(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("a,label\n1,café\n".encode("latin-1"))
    assert "not UTF-8" in load_error(csv_cfg(path))


def test_bad_settings():
    assert "needs data.path" in load_error(DataConfig(source="csv"))
    assert "not one of: csv, npy" in load_error(DataConfig(source="parquet"))
    assert "data.path is not used" in load_error(DataConfig(source="jackets", path="x.csv"))
    assert "data.weights" in load_error(DataConfig(source="synthetic", weights=[0.5, 0.6]))
    assert "n_informative" in load_error(DataConfig(source="synthetic", n_informative=30))


def test_csv_without_target_lists_columns(tmp_path):
    cfg = DataConfig(source="csv", path=str(write(tmp_path, GOOD)))
    assert "data.target must name the label column; columns are: a, b, label" in load_error(cfg)


# ----------------------------------------------------------------------------- bad npy input

def save_pair(folder, X, y):
    folder.mkdir(exist_ok=True)
    np.save(folder / "X.npy", X)
    np.save(folder / "y.npy", y)
    return DataConfig(source="npy", path=str(folder))


@pytest.mark.parametrize(("X", "y", "part"), [
    (np.zeros(4), np.array([0, 1, 0, 1]), "X must be 2-D (rows x features), got shape (4,)"),
    (np.zeros((4, 2)), np.array([0, 1, 0]), "X has 4 rows but y has shape (3,)"),
    (np.zeros((0, 2)), np.zeros(0), "empty data set"),
    (np.array([[0.0, 1], [2, np.inf], [3, 4]]), np.array([0, 1, 0]),
     "X holds inf at row index 1, column index 1"),
    (np.array([[0.0], [1], [2]]), np.array([0, 1, 2]), "y must hold exactly two distinct"),
    (np.array([[0.0], [1], [2]]), np.array([1, 1, 1]), "y holds a single class '1'"),
])
def test_bad_npy(tmp_path, X, y, part):
    message = load_error(save_pair(tmp_path / "d", X, y))
    assert str(tmp_path / "d") in message and part in message


def test_npy_nan_found_across_chunks(tmp_path):
    X = np.zeros((10, 3))
    X[7, 2] = np.nan
    cfg = replace(save_pair(tmp_path / "d", X, np.arange(10) % 2), chunk_size=3)
    assert "X holds nan at row index 7, column index 2" in load_error(cfg)


def test_npy_missing_pieces(tmp_path):
    (tmp_path / "d").mkdir()
    np.save(tmp_path / "d" / "X.npy", np.zeros((2, 2)))
    assert "no y.npy" in load_error(DataConfig(source="npy", path=str(tmp_path / "d")))
    np.savez(tmp_path / "a.npz", X=np.zeros((2, 2)), labels=np.zeros(2))
    message = load_error(DataConfig(source="npy", path=str(tmp_path / "a.npz")))
    assert "no array 'y' in the archive; it holds: X, labels" in message
    assert "not found" in load_error(DataConfig(source="npy", path=str(tmp_path / "none")))
    (tmp_path / "x.npy").write_bytes(b"junk")
    message = load_error(DataConfig(source="npy", path=str(tmp_path / "x.npy")))
    assert "x.npy: source npy wants a folder with X.npy and y.npy" in message
    (tmp_path / "bad.npz").write_bytes(b"junk")
    assert "cannot read" in load_error(DataConfig(source="npy", path=str(tmp_path / "bad.npz")))


