"""Bad input, end to end through ``logreg_torch.cli.main``: every mistake ends with exit code 2
and exactly one ``error:`` line on stderr (what, where, how to fix), never a traceback. This
file: config files, overrides, any document or override given to ``config``; the numbers given
to ``explain``; a config built in code and given to ``fit``.

The loader-level checks live beside their modules (test_config.py, test_config_errors.py,
test_explain.py, test_loss_bad_input.py); these files (test_hardening_*.py) prove that the
same mistakes reach a user of the command line as one clear line, and add the cases those
files lack.
"""

from __future__ import annotations

import dataclasses

import pytest
from hardening_helpers import DEFAULT, assert_all_in, error_line  # tests/ is on sys.path
from hypothesis import HealthCheck, event, given, settings

# The random YAML documents and override strings of the loader's own property test.
from test_config import documents, overrides  # tests/ is on sys.path under pytest

from logreg_torch import cli
from logreg_torch.config import Config, ConfigError, LogConfig, LossConfig, OptimConfig, load_config
from logreg_torch.train import fit

pytestmark = pytest.mark.usefixtures("no_figures")

# ============================================================================ configs

CONFIG_FILES = {
    # unknown keys, at every level
    "unknown section": ("optimizer:\n  lr: 0.1\n",
                        ["unknown key 'optimizer'", "x.yaml:1", "did you mean 'optim'"]),
    "unknown key in a section": ("train:\n  epochs: 3\n  epoks: 4\n",
                                 ["unknown key 'train.epoks'", "x.yaml:3", "'train.epochs'"]),
    "keys below a leaf": ("optim:\n  lr:\n    value: 0.1\n", ["optim.lr", "a number"]),
    # wrong types
    "text for an int": ("train:\n  epochs: ten\n", ["train.epochs", "an integer", "x.yaml:2"]),
    "text for a bool": ("data:\n  standardize: maybe\n", ["data.standardize", "true or false"]),
    "int for a list": ("model:\n  hidden: 64\n", ["model.hidden", "a list of integers"]),
    "list for a float": ("optim:\n  lr: [0.1]\n", ["optim.lr", "a number"]),
    # out of range
    "negative lr": ("optim:\n  lr: -1\n", ["optim.lr", "> 0", "x.yaml:2"]),
    "zero epochs": ("train:\n  epochs: 0\n", ["train.epochs", ">= 1", "x.yaml:2"]),
    "label_smoothing 1.0": ("loss:\n  label_smoothing: 1.0\n",
                            ["loss.label_smoothing", "in [0, 1)", "got 1.0", "x.yaml:2"]),
    # empty, not YAML, not a mapping
    "empty file": ("", ["x.yaml", "is empty", "pass no file"]),
    "comments only": ("# everything commented out\n", ["x.yaml", "is empty"]),
    "YAML syntax": ("optim: {lr: 0.1\n", ["invalid YAML in", "x.yaml:", "fix the syntax"]),
    "a CSV given as the config": ("a,b,label\n1,2,yes\n",
                                  ["x.yaml holds the value", "must be a mapping of sections"]),
    "binary file": (b"\x89PNG\r\n\x1a\n\x00\x00\xff", ["x.yaml", "not UTF-8"]),
    "a list at the root": ("- optim\n- train\n", ["x.yaml holds a list", "'optim:'"]),
    "a list for a section": ("train: [1, 2]\n", ["section 'train'", "x.yaml:1", "mapping of keys"]),
}


@pytest.mark.parametrize("case", list(CONFIG_FILES))
def test_bad_config_file(case, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)  # a train that wrongly got going would write runs/ here
    text, fragments = CONFIG_FILES[case]
    path = tmp_path / "x.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    assert_all_in(error_line(["train", path, "--quiet"], capsys), fragments)
    assert not (tmp_path / "runs").exists()


BAD_OVERRIDES = {
    "unknown section": (["foo=1"], ["unknown key 'foo'", "override 'foo=1'"]),
    "a key below a leaf": (["optim.lr.x=1"], ["optim.lr", "a number"]),
    "wrong type": (["train.epochs=ten"], ["train.epochs", "an integer",
                                          "override 'train.epochs=ten'"]),
    "out of range": (["data.val_fraction=1"], ["data.val_fraction", "[0, 1)"]),
    "unknown choice": (["train.device=gpu"], ["train.device", "auto, cpu, cuda, cuda:N or mps"]),
    "negative pos_weight": (["loss.pos_weight=-2"], ["loss.pos_weight", "positive number"]),
    "negative label_smoothing": (["loss.label_smoothing=-0.1"],
                                 ["loss.label_smoothing", "[0, 1)"]),
    "empty key": (["=0.1"], ["empty key", "optim.lr=0.1"]),
    "double dot": (["optim..lr=1"], ["not a dotted key"]),
    "indexing": (["model.hidden[0]=3"], ["not a dotted key", "model.hidden=[32,16]"]),
    "unclosed list": (["optim.lr=[0.1,"], ["cannot parse", "quote strings"]),
    "spaces around =": (["optim.lr", "=", "0.1"], ["override 'optim.lr' has no '='"]),
    "dashes": (["--optim.lr=0.1"], ["'--optim.lr=0.1'", "without dashes", "e.g. optim.lr=0.1"]),
}


@pytest.mark.parametrize("flag_first", [False, True], ids=["overrides-first", "flag-first"])
@pytest.mark.parametrize("case", list(BAD_OVERRIDES))
def test_bad_override(case, flag_first, tmp_path, monkeypatch, capsys) -> None:
    # Overrides after a flag reach main() as argparse's leftovers: the same one line there.
    monkeypatch.chdir(tmp_path)
    argv, fragments = BAD_OVERRIDES[case]
    argv = ["--quiet", *argv] if flag_first else [*argv, "--quiet"]
    assert_all_in(error_line(["train", DEFAULT, *argv], capsys), fragments)
    assert not (tmp_path / "runs").exists()


@settings(max_examples=80, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(document=documents,
       overrides=overrides.filter(lambda items: not any(o.startswith("-") for o in items)))
def test_cli_config_on_any_input_prints_a_config_or_one_error_line(tmp_path, capsys, document,
                                                                   overrides) -> None:
    # (Arguments that start with '-' belong to argparse; the dashed override is tested above.)
    path = tmp_path / "x.yaml"
    path.write_text(document, encoding="utf-8")
    capsys.readouterr()
    code = cli.main(["config", str(path), *overrides])
    out, err = capsys.readouterr()
    if code == 0:
        event("printed a config")
        assert err == ""
        printed = tmp_path / "printed.yaml"
        printed.write_text(out, encoding="utf-8")
        assert load_config(printed) == load_config(path, overrides)
    else:
        event("one error line")
        assert code == 2 and out == ""
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), err


# ============================================================================ loss inputs

EXPLAIN = {
    "probability above 1": (["--probs", "1.5", "--labels", "1"],
                            ["probability 1.5 of customer 1", "between 0 and 1"]),
    "negative probability": (["--probs", "0.2,-0.1", "--labels", "1,0"], ["customer 2"]),
    "label 2": (["--probs", "0.5", "--labels", "2"], ["must be 0 (cardigan) or 1 (jacket)"]),
    "lengths differ": (["--probs", "0.5,0.2", "--labels", "1"], ["2 probs but 1 labels"]),
    "labels missing": (["--probs", "0.5"], ["both probs and labels"]),
    "nan probability": (["--probs", "nan", "--labels", "1"], ["--probs", "not a finite number"]),
    "empty list": (["--probs", "", "--labels", ""], ["--probs", "no numbers given"]),
}


@pytest.mark.parametrize("case", list(EXPLAIN))
def test_bad_explain_input(case, capsys) -> None:
    argv, fragments = EXPLAIN[case]
    assert_all_in(error_line(["explain", *argv], capsys), fragments)


@pytest.mark.parametrize(("section", "value", "fragments"), [
    ("loss", LossConfig(label_smoothing=1.0), ["loss.label_smoothing must be in [0, 1)"]),
    ("loss", LossConfig(pos_weight=-1.0), ["loss.pos_weight", "positive number"]),
    ("loss", LossConfig(l2=float("nan")), ["loss.l2 must be >= 0"]),
    ("optim", OptimConfig(lr=-0.1), ["optim.lr must be > 0"]),
])
def test_fit_checks_a_config_built_in_code(section, value, fragments, tmp_path) -> None:
    # The API path: no load_config in between, yet the same one-line error, before any folder.
    cfg = dataclasses.replace(Config(), **{section: value},
                              log=LogConfig(run_dir=str(tmp_path / "run"), histogram_every=0))
    with pytest.raises(ConfigError) as info:
        fit(cfg)
    assert_all_in(str(info.value), [*fragments, "the config given to fit"])
    assert not (tmp_path / "run").exists()
