"""Tests for logreg_torch/config/: shipped configs, merge order, saving, text keys, and any
input loading or raising ConfigError. The errors a user meets: test_config_errors.py."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml
from config_helpers import write  # tests/ is on sys.path under pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from logreg_torch.config import (
    Config,
    ConfigError,
    config_from_dict,
    config_to_yaml,
    load_config,
    save_config,
)

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
SHIPPED = {
    "default", "jackets", "breast_cancer", "synthetic", "csv", "npy",
    "sgd", "adam", "lbfgs", "mlp", "cuda", "sklearn_parity",
}  # fmt: skip



# --- shipped configs -----------------------------------------------------------------------------


def test_every_expected_config_is_shipped():
    missing = SHIPPED - {p.stem for p in CONFIGS}
    assert not missing


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_loads(path: Path):
    cfg = load_config(path)
    assert isinstance(cfg, Config)
    first = path.read_text().splitlines()[0]
    assert first.startswith("# ") and f"configs/{path.name}" in first
    assert cfg.log.name == path.stem  # run folders are named after the config
    assert config_from_dict(dataclasses.asdict(cfg)) == cfg


def test_default_config_is_small_and_fast():
    cfg = load_config(ROOT / "configs" / "default.yaml")
    assert (cfg.data.source, cfg.model.name, cfg.optim.name) == ("jackets", "logistic", "adam")
    assert cfg.train.epochs <= 30 and cfg.train.batch_size == 64


def test_sklearn_parity_config():
    cfg = load_config(ROOT / "configs" / "sklearn_parity.yaml")
    assert cfg.data.source == "breast_cancer"
    assert cfg.data.val_fraction == cfg.data.test_fraction == 0
    assert cfg.optim.name == "lbfgs" and cfg.train.batch_size is None
    assert cfg.loss.l2 == pytest.approx(1 / 569, rel=1e-15)  # sklearn C = 1 / (l2 * 569)
    assert cfg.optim.tol <= 1e-8 and cfg.optim.max_iter >= 1000


def test_csv_config_points_at_bundled_jackets():
    cfg = load_config(ROOT / "configs" / "csv.yaml")
    assert cfg.data.path == "logreg_torch/datasets/jackets.csv"
    assert (cfg.data.target, cfg.data.positive_label) == ("purchase", "jacket")


# --- merge order and types -----------------------------------------------------------------------


def test_no_file_gives_the_defaults():
    assert load_config(None) == Config()


def test_defaults_then_file_then_overrides(tmp_path):
    path = write(tmp_path, "optim:\n  lr: 0.1\n  name: sgd\ntrain:\n  epochs: 3\n")
    cfg = load_config(path, ["optim.lr=0.2", "train.seed=7"])
    assert cfg.optim.lr == 0.2  # override beats file
    assert cfg.optim.name == "sgd" and cfg.train.epochs == 3  # file beats defaults
    assert cfg.train.batch_size == 64 and cfg.train.seed == 7  # untouched default, new override


def test_later_override_wins():
    assert load_config(None, ["optim.lr=0.1", "optim.lr=0.3"]).optim.lr == 0.3


def test_override_values_are_yaml():
    cfg = load_config(
        None,
        [
            "train.batch_size=null",
            "model.hidden=[32,16]",
            "optim.lr=1e-3",
            "log.name='1e-3'",
            "data.weights=[0.9, 0.1]",
            "optim={name: sgd, momentum: 0.9}",
        ],
    )
    assert cfg.train.batch_size is None
    assert cfg.model.hidden == [32, 16]
    assert cfg.optim.lr == 0.001
    assert cfg.log.name == "1e-3"
    assert cfg.data.weights == [0.9, 0.1]
    assert (cfg.optim.name, cfg.optim.momentum) == ("sgd", 0.9)


def test_types_are_coerced(tmp_path):
    text = (
        "optim:\n  lr: 1\ntrain:\n  epochs: '5'\n  grad_clip: 2\n"
        "data:\n  standardize: 'false'\n  weights: ['0.25', 0.75]\n"
    )
    cfg = load_config(write(tmp_path, text))
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)
    assert cfg.train.epochs == 5 and isinstance(cfg.train.epochs, int)
    assert cfg.train.grad_clip == 2.0 and isinstance(cfg.train.grad_clip, float)
    assert cfg.data.standardize is False
    assert cfg.data.weights == [0.25, 0.75]


@pytest.mark.parametrize(
    ("value", "expected"),
    [("null", None), ("balanced", "balanced"), ("3", 3.0), ("2.5", 2.5), ("'4'", 4.0)],
)
def test_pos_weight_forms(value, expected):
    pos_weight = load_config(None, [f"loss.pos_weight={value}"]).loss.pos_weight
    assert pos_weight == expected and type(pos_weight) is type(expected)


def test_empty_section_means_no_change(tmp_path):
    # Every key of a section commented out parses as null.
    assert (
        load_config(write(tmp_path, "optim:\n#  lr: 0.1\ntrain:\n  epochs: 2\n")).optim.lr == 0.05
    )


def test_interpolation_is_resolved(tmp_path):
    cfg = load_config(write(tmp_path, "optim:\n  lr: 0.2\n  momentum: ${optim.lr}\n"))
    assert cfg.optim.momentum == 0.2


def test_valid_edge_values():
    cfg = load_config(
        None,
        [
            "optim.name=lbfgs",
            "train.batch_size=null",
            "train.device=cuda:1",
            "train.dist_backend=gloo",
            "data.val_fraction=0",
            "data.test_fraction=0.99",
            "data.n_informative=20",
            "train.early_stopping_patience=1",
            "data.weights=[0.7]",
        ],
    )
    assert cfg.train.device == "cuda:1" and cfg.data.n_informative == cfg.data.n_features


# --- saving and rebuilding -----------------------------------------------------------------------


def test_save_config_round_trips_and_leaves_no_temp_file(tmp_path):
    cfg = load_config(None, ["model.hidden=[8]", "log.name='007'", "loss.pos_weight=balanced"])
    path = tmp_path / "run" / "config.yaml"
    save_config(cfg, path)
    save_config(cfg, path)  # overwriting is fine
    assert load_config(path) == cfg
    assert [p.name for p in path.parent.iterdir()] == ["config.yaml"]


def test_literal_interpolation_text_survives_save_and_rebuild(tmp_path):
    cfg = load_config(None, [r"log.name=\${not_an_interpolation}"])
    assert cfg.log.name == "${not_an_interpolation}"
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg
    assert config_from_dict(dataclasses.asdict(cfg)) == cfg


def test_config_to_yaml_is_plain_yaml():
    text = config_to_yaml(Config())
    assert yaml.safe_load(text)["optim"]["name"] == "adam"


def test_config_from_dict_validates_and_names_the_source():
    assert config_from_dict({"optim": {"lr": 0.5}}).optim.lr == 0.5
    with pytest.raises(ConfigError, match="optim.lrr.*checkpoint last.pt.*optim.lr"):
        config_from_dict({"optim": {"lrr": 0.5}}, source="checkpoint last.pt")
    with pytest.raises(ConfigError, match="mapping of sections"):
        config_from_dict([1, 2])  # type: ignore[arg-type]

# --- property: any input loads or raises ConfigError ---------------------------------------------

DEFAULTS = dataclasses.asdict(Config())
SECTIONS = list(DEFAULTS)
LEAVES = sorted({key for section in DEFAULTS.values() for key in section})
DEFAULT_OF = {f"{s}.{k}": v for s, section in DEFAULTS.items() for k, v in section.items()}
DOTTED = list(DEFAULT_OF)
WORDS = ["adam", "lbfgs", "mlp", "balanced", "cuda:0", "bf16", "csv", "null", "${optim.lr}"]


def flow(value) -> str:
    """A value as one line of YAML, the way a user types it after 'key='."""
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).removesuffix("...\n").strip()


def nest(settings: list[tuple[str, object]]) -> dict:
    doc: dict = {}
    for key, value in settings:
        section, name = key.split(".")
        doc.setdefault(section, {})[name] = value
    return doc


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-10, 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(WORDS),
    st.text(max_size=8),
)
keys = st.one_of(st.sampled_from(SECTIONS + LEAVES + DOTTED), st.text(max_size=6), st.integers())
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
    max_leaves=8,
)
# A real key with its default or a random scalar: such documents load often enough to also
# exercise the success path (and the save/load round trip).
setting = st.sampled_from(DOTTED).flatmap(
    # 3 in 4 keep the default, so a document of a few settings often stays valid.
    lambda key: st.tuples(
        st.just(key),
        st.integers(0, 3).flatmap(lambda i: scalars if i == 0 else st.just(DEFAULT_OF[key])),
    )
)
messy_sections = st.dictionaries(
    st.sampled_from(SECTIONS) | keys,
    st.dictionaries(st.sampled_from(LEAVES) | keys, values, max_size=4) | values,
    max_size=4,
)
documents = st.one_of(
    st.lists(setting, min_size=1, max_size=4).map(nest).map(yaml.safe_dump),
    st.builds(yaml.safe_dump, messy_sections | values),
    st.text(max_size=80),
    st.sampled_from(["", "optim:\n  lr: [", "a: &x [*x]", "optim: {lr: !!float x}", "- 1\n- 2"]),
)
overrides = st.lists(
    st.one_of(
        setting.map(lambda kv: f"{kv[0]}={flow(kv[1])}"),
        st.builds(
            "{}={}".format, st.sampled_from(SECTIONS) | st.text(max_size=6), values.map(flow)
        ),
        st.text(max_size=12),
    ),
    max_size=2,
) | st.just([])


@settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(document=documents, overrides=overrides)
def test_any_input_loads_or_raises_config_error(tmp_path, document, overrides):
    path = write(tmp_path, document)
    try:
        cfg = load_config(path, overrides)
    except ConfigError as e:
        event("ConfigError")
        assert str(e) and len(str(e).splitlines()) == 1
        return
    event("loaded")
    assert isinstance(cfg, Config)
    save_config(cfg, tmp_path / "saved.yaml")
    assert load_config(tmp_path / "saved.yaml") == cfg


# YAML 1.1 reads these unquoted words as booleans, and 01 / 1.0 / 1e3 as numbers; a text key
# keeps what was written (before: 'True', '1', '1.0', '1000.0').
WRITTEN = ["yes", "no", "on", "off", "y", "n", "true", "false", "Yes", "NO", "True", "OFF",
           "01", "1.0", "1e3", "0x1F"]


@pytest.mark.parametrize("word", WRITTEN)
def test_text_keys_keep_the_text_written_in_a_file_and_an_override(tmp_path, word) -> None:
    path = write(tmp_path, f"data:\n  target: {word}\n  positive_label: {word}\n"
                           f"  features: [{word}, b]\nlog:\n  name: {word}\n")
    cfg = load_config(path)
    assert (cfg.data.target, cfg.data.positive_label, cfg.log.name) == (word, word, word)
    assert cfg.data.features == [word, "b"]
    cfg = load_config(None, [f"data.positive_label={word}", f"data.features=[{word},b]",
                             f"log.run_dir={word}"])
    assert (cfg.data.positive_label, cfg.data.features, cfg.log.run_dir) == (
        word, [word, "b"], word)
    # and a saved run config reads back the same
    save_config(cfg, tmp_path / "saved.yaml")
    assert load_config(tmp_path / "saved.yaml").data.positive_label == word


def test_text_keys_still_take_null_quotes_and_interpolations(tmp_path) -> None:
    path = write(tmp_path, "data:\n  target: 'on'\n  positive_label: ${data.target}\n"
                           "  features: null\n")
    cfg = load_config(path)
    assert (cfg.data.target, cfg.data.positive_label, cfg.data.features) == ("on", "on", None)
    cfg = load_config(path, ["data.positive_label=null", "data={target: no}"])
    assert (cfg.data.target, cfg.data.positive_label) == ("no", None)


def test_a_yes_no_label_can_be_chosen_as_positive_from_a_config_file(tmp_path) -> None:
    from logreg_torch.data import load_table

    data = write(tmp_path, "a,b,label\n1,2,yes\n3,4,no\n5,6,yes\n7,8,no\n", "data.csv")
    path = write(tmp_path, f"data:\n  source: csv\n  path: {data}\n  target: label\n"
                           f"  positive_label: no\n")
    assert load_table(load_config(path).data, seed=0).label_map == {"yes": 0, "no": 1}
