"""Tests for logreg_torch/config/: every user mistake (file, YAML, keys, types, overrides,
ranges and cross-field checks) is one ConfigError line naming the key and where it was set."""

from __future__ import annotations

from pathlib import Path

import pytest
from config_helpers import write  # tests/ is on sys.path under pytest

from logreg_torch.config import ConfigError, load_config


def error_of(path: str | Path | None, overrides: tuple[str, ...] = ()) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    message = str(info.value)
    assert len(message.splitlines()) == 1, message
    return message


# --- file errors ---------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    message = error_of(tmp_path / "nope.yaml")
    assert "nope.yaml" in message and "not found" in message


def test_folder_instead_of_file(tmp_path):
    assert "is a folder" in error_of(tmp_path)


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_empty_file(tmp_path, text):
    message = error_of(write(tmp_path, text))
    assert "x.yaml" in message and "empty" in message


def test_not_utf8(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_bytes(b"\xff\xfe\x00binary")
    assert "not UTF-8" in error_of(path)


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("optim:\n  lr: 0.1\n name: adam\n", ["invalid YAML", "x.yaml:3"]),
        ("optim:\n  lr: [0.1,\n", ["invalid YAML", "x.yaml:"]),
        ("optim: {lr: 0.1\n", ["invalid YAML", "x.yaml:"]),
        ("optim:\n  lr: 0.1\n  lr: 0.2\n", ["duplicate key", "x.yaml:3", "keep only one"]),
        ("optim:\n  lr: !!float abc\n", ["x.yaml"]),
        ("a: 1\n---\nb: 2\n", ["invalid YAML", "x.yaml:"]),
        ("optim:\n\tlr: 0.1\n", ["invalid YAML", "x.yaml:2"]),
    ],
)
def test_yaml_syntax_errors_name_file_and_line(tmp_path, text, fragments):
    message = error_of(write(tmp_path, text))
    assert all(f in message for f in fragments), message


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("- optim\n- train\n", ["holds a list", "mapping of sections"]),
        ("42\n", ["holds the value '42'"]),
        ("optim: [1, 2]\n", ["section 'optim'", "x.yaml:1", "mapping of keys"]),
        ("train:\n  epochs: 3\noptim: adam\n", ["section 'optim'", "x.yaml:3", "'adam'"]),
    ],
)
def test_mapping_expected(tmp_path, text, fragments):
    message = error_of(write(tmp_path, text))
    assert all(f in message for f in fragments), message


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("optim:\n  lrr: 0.1\n", ["'optim.lrr'", "x.yaml:2", "did you mean 'optim.lr'"]),
        ("optimizer:\n  lr: 0.1\n", ["'optimizer'", "x.yaml:1", "did you mean 'optim'"]),
        ("optim:\n  epochs: 3\n", ["'optim.epochs'", "did you mean 'train.epochs'"]),
        ("optim:\n  epoch: 3\n", ["'optim.epoch'", "did you mean 'train.epochs'"]),
        ("lr: 0.1\n", ["'lr'", "did you mean 'optim.lr'"]),
        ("optim.lr: 0.1\n", ["'optim.lr'", "nest it"]),
        ("zzz: 1\n", ["'zzz'", "sections are data, model"]),
        ("train:\n  qqqq: 1\n", ["'train.qqqq'", "'train' keys are epochs"]),
        ("1: 2\n", ["unknown key '1'"]),
    ],
)
def test_unknown_keys_suggest_the_nearest(tmp_path, text, fragments):
    message = error_of(write(tmp_path, text))
    assert message.startswith("unknown key") and all(f in message for f in fragments), message


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("train:\n  epochs: ten\n", ["train.epochs", "an integer", "'ten'", "x.yaml:2"]),
        ("train:\n  epochs: 2.5\n", ["train.epochs", "an integer", "2.5"]),
        ("optim:\n  lr: fast\n", ["optim.lr", "a number", "'fast'"]),
        ("optim:\n  lr: {a: 1}\n", ["optim.lr", "a number", "a mapping"]),
        ("model:\n  hidden: 5\n", ["model.hidden", "a list of integers"]),
        ("model:\n  hidden: [32, x]\n", ["model.hidden", "a list of integers", "[32, 'x']"]),
        ("data:\n  standardize: maybe\n", ["data.standardize", "true or false"]),
        ("train:\n  batch_size: many\n", ["train.batch_size", "an integer or null"]),
        ("data:\n  path: [a, b]\n", ["data.path", "a string or null"]),
        ("optim:\n  lr: ${nope}\n", ["optim.lr", "nope", "x.yaml:2"]),
    ],
)
def test_wrong_types_name_key_and_type(tmp_path, text, fragments):
    message = error_of(write(tmp_path, text))
    assert all(f in message for f in fragments), message


# --- override errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "fragments"),
    [
        ("optim.lr", ["'optim.lr'", "no '='"]),
        ("=0.1", ["empty key"]),
        ("  =0.1", ["empty key"]),
        ("optim..lr=1", ["not a dotted key"]),
        ("model.hidden[0]=3", ["not a dotted key", "model.hidden=[32,16]"]),
        ("optim.lrr=0.1", ["unknown key 'optim.lrr'", "override 'optim.lrr=0.1'", "'optim.lr'"]),
        ("optim.lr=[0.1,", ["override 'optim.lr=[0.1,'", "cannot parse"]),
        ("optim.lr=!!float abc", ["cannot parse"]),
        ("train.epochs=ten", ["train.epochs", "an integer", "override 'train.epochs=ten'"]),
        ("optim=adam", ["section 'optim'", "mapping of keys"]),
        ("optim.lr.x=1", ["optim.lr", "a number"]),
    ],
)
def test_bad_overrides(override, fragments):
    message = error_of(None, (override,))
    assert all(f in message for f in fragments), message


# --- range and cross-field checks ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        (["optim.lr=0"], ["optim.lr", "> 0"]),
        (["optim.lr=-1"], ["optim.lr", "> 0", "-1.0"]),
        (["optim.lr=.nan"], ["optim.lr", "> 0"]),
        (["optim.lr=.inf"], ["optim.lr", "> 0"]),
        (["data.val_fraction=1"], ["data.val_fraction", "[0, 1)"]),
        (["data.test_fraction=-0.1"], ["data.test_fraction", "[0, 1)"]),
        (
            ["data.val_fraction=0.5", "data.test_fraction=0.5"],
            ["data.val_fraction + data.test_fraction", "< 1", "override 'data.test_fraction=0.5'"],
        ),
        (["train.epochs=0"], ["train.epochs", ">= 1"]),
        (["train.batch_size=0"], ["train.batch_size", "null (full batch) or >= 1"]),
        (["optim.name=adm"], ["optim.name", "sgd, adam, adamw, lbfgs", "did you mean 'adam'"]),
        (["optim.name=lbfgs"], ["lbfgs", "full-batch", "train.batch_size is 64", "null"]),
        (["optim.scheduler=linear"], ["optim.scheduler", "none, step, cosine, plateau"]),
        (["model.name=svm"], ["model.name", "logistic, mlp"]),
        (["data.source=parquet"], ["data.source", "csv, npy, synthetic, jackets"]),
        (["data.source=csv"], ["data.path is required", "'csv'"]),
        (["data.source=npy"], ["data.path is required", "'npy'"]),
        (["train.precision=fp8"], ["train.precision", "fp32, fp64, bf16, fp16"]),
        (["train.device=gpu"], ["train.device", "auto, cpu, cuda, cuda:N or mps"]),
        (["train.device=cuda:x"], ["train.device", "cuda:N"]),
        (["loss.label_smoothing=1"], ["loss.label_smoothing", "[0, 1)"]),
        (["loss.l1=-1"], ["loss.l1", ">= 0"]),
        (["loss.l2=-0.1"], ["loss.l2", ">= 0"]),
        (["optim.momentum=-0.9"], ["optim.momentum", ">= 0"]),
        (["model.dropout=1"], ["model.dropout", "[0, 1)"]),
        (["model.hidden=[32,0]"], ["model.hidden", ">= 1"]),
        (["model.name=mlp", "model.hidden=[]"], ["model.hidden", "non-empty", "mlp"]),
        (["loss.pos_weight=0"], ["loss.pos_weight", "positive number", "'balanced'"]),
        (["loss.pos_weight=-2"], ["loss.pos_weight", "positive number"]),
        (["loss.pos_weight=heavy"], ["loss.pos_weight", "'heavy'"]),
        (["loss.pos_weight=true"], ["loss.pos_weight", "True"]),
        (["loss.pos_weight=[1]"], ["loss.pos_weight", "[1]"]),
        (["train.grad_clip=0"], ["train.grad_clip", "> 0"]),
        (["train.checkpoint_every=0"], ["train.checkpoint_every", ">= 1"]),
        (["data.n_features=3", "data.n_informative=5"], ["data.n_informative", "between 1 and"]),
        (["data.weights=[-0.1,1.1]"], ["data.weights", "summing to 1"]),
        (["data.weights=[0.5,0.6]"], ["data.weights", "summing to 1"]),
        (["data.weights=[1,0]"], ["data.weights", "> 0"]),
        (["data.weights=[0.2,0.3,0.5]"], ["data.weights", "[w0, w1]"]),
        (["data.weights=[]"], ["data.weights", "[w0, w1]"]),
        (["data.n_samples=1"], ["data.n_samples", ">= 2"]),
        (["train.dist_backend=mpi"], ["train.dist_backend", "gloo or nccl"]),
        (["train.early_stopping_patience=0"], ["train.early_stopping_patience", ">= 1"]),
        (["optim.gamma=1.5"], ["optim.gamma", "(0, 1)"]),
        (["train.seed=-1"], ["train.seed"]),
    ],
)
def test_range_and_cross_field_checks(overrides, fragments):
    message = error_of(None, tuple(overrides))
    assert "override '" in message
    assert all(f in message for f in fragments), message


def test_range_error_in_a_file_names_the_line(tmp_path):
    message = error_of(write(tmp_path, "train:\n  epochs: 3\noptim:\n  lr: -1\n"))
    assert "optim.lr" in message and "x.yaml:4" in message


def test_lbfgs_error_names_both_places(tmp_path):
    message = error_of(write(tmp_path, "optim:\n  name: lbfgs\n"))
    assert "x.yaml:2" in message and "(default)" in message and "train.batch_size: null" in message


@pytest.mark.parametrize("where", ["override", "file"])
def test_a_default_is_not_blamed_on_a_layer_that_set_its_section(tmp_path, where):
    # Another key of the train section set in a layer: batch_size is still the default's
    if where == "override":
        message = error_of(None, ("optim.name=lbfgs", "train.precision=fp64"))
    else:
        message = error_of(write(tmp_path, "optim:\n  name: lbfgs\ntrain:\n  epochs: 3\n"))
    assert "train.batch_size is 64 (default)" in message, message
