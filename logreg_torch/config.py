"""Typed configuration: one dataclass per section, merged with OmegaConf.

Defaults live here; a YAML file and then ``key=value`` overrides change them. Every mistake a
user can make in either becomes a one-line ``ConfigError`` naming the dotted key and where it
was written (``file:line`` or the override).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import difflib
import functools
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException


@dataclass
class DataConfig:
    source: str = "jackets"  # csv | npy | synthetic | jackets | breast_cancer
    path: str | None = None  # csv file, npy folder / .npz file
    target: str | None = None  # target column (csv); bundled sets know their own
    features: list[str] | None = None  # null = every column but the target
    positive_label: str | None = None  # label value mapped to 1 (see data.py for the default rule)
    val_fraction: float = 0.2
    test_fraction: float = 0.0
    standardize: bool = True
    streaming: bool = False  # npy only: train from the memory map in chunks
    chunk_size: int = 65536
    # synthetic (like sklearn.datasets.make_classification)
    n_samples: int = 1000
    n_features: int = 20
    n_informative: int = 5
    class_sep: float = 1.0
    weights: list[float] | None = None  # class proportions, e.g. [0.9, 0.1]


@dataclass
class ModelConfig:
    name: str = "logistic"  # logistic | mlp
    bias: bool = True
    hidden: list[int] = field(default_factory=lambda: [64])
    dropout: float = 0.0


@dataclass
class LossConfig:
    from_logits: bool = True
    pos_weight: Any = None  # null, a positive number, or "balanced"
    label_smoothing: float = 0.0
    # lambda of lambda/2 * ||w||^2 added to the mean loss (sklearn C = 1/(l2*n_train))
    l2: float = 0.0
    l1: float = 0.0  # lambda of lambda * ||w||_1; the bias is never penalised
    check_range: bool = True  # validate targets (and probabilities) are in [0, 1]


@dataclass
class OptimConfig:
    name: str = "adam"  # sgd | adam | adamw | lbfgs
    lr: float = 0.05
    momentum: float = 0.0
    weight_decay: float = 0.0
    scheduler: str = "none"  # none | step | cosine | plateau
    step_size: int = 10  # step scheduler: epochs between decays
    gamma: float = 0.5  # step / plateau decay factor
    max_iter: int = 100  # lbfgs iterations per epoch
    tol: float = 1e-7  # lbfgs tolerance on the gradient and on changes
    history_size: int = 10  # lbfgs


@dataclass
class TrainConfig:
    epochs: int = 20
    batch_size: int | None = 64  # null = full batch
    early_stopping_patience: int | None = None  # epochs without val-loss improvement; null = off
    early_stopping_min_delta: float = 0.0
    grad_clip: float | None = None  # max gradient norm
    precision: str = "fp32"  # fp32 | fp64 | bf16 | fp16 (bf16/fp16: autocast mixed precision)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    seed: int = 0
    deterministic: bool = False
    checkpoint_every: int = 1  # epochs between last.pt writes
    resume: str | None = None  # path to a last.pt / best.pt
    fast_path: bool = True  # fused linear+loss kernels when they apply
    compile: bool = False  # torch.compile the model
    dist_backend: str | None = None  # gloo | nccl; null = pick by device
    dist_timeout: float = 300.0  # seconds before a collective gives up


@dataclass
class LogConfig:
    name: str = "default"
    run_dir: str | None = None  # default runs/<name>-<timestamp>
    log_every: int = 1  # epochs between scalar writes
    histogram_every: int = 1  # epochs between weight histograms; 0 = off


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    log: LogConfig = field(default_factory=LogConfig)


class ConfigError(ValueError):
    """A mistake in a config file, an override or a stored config: one line, for people."""

    def __init__(self, message: str) -> None:
        # Messages embed parser text and paths; keep them on one line for the CLI.
        super().__init__(" ".join(message.splitlines()))


DATA_SOURCES = ("csv", "npy", "synthetic", "jackets", "breast_cancer")
MODELS = ("logistic", "mlp")
OPTIMIZERS = ("sgd", "adam", "adamw", "lbfgs")
SCHEDULERS = ("none", "step", "cosine", "plateau")
PRECISIONS = ("fp32", "fp64", "bf16", "fp16")
DIST_BACKENDS = ("gloo", "nccl")
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# section name -> {key -> type}, read from the dataclasses so the schema has one source of truth.
_SCHEMA: dict[str, dict[str, Any]] = {
    section: get_type_hints(cls) for section, cls in get_type_hints(Config).items()
}
_DOTTED = [f"{section}.{key}" for section, keys in _SCHEMA.items() for key in keys]

# Where a key was set: "configs/x.yaml:4", "override 'optim.lr=1'", ...
Where = Callable[[str], str]


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> Config:
    """Defaults, then the YAML file at ``path`` (if any), then ``key=value`` overrides."""
    layers: list[tuple[dict, Where]] = []
    if path is not None:
        layers.append(_read_yaml(Path(path), str(path)))
    for text in overrides:
        layers.append((_parse_override(text), lambda key, text=text: f"override '{text}'"))
    return _build(layers)


def config_from_dict(d: dict, source: str = "config dict") -> Config:
    """Rebuild and validate a resolved config, e.g. ``dataclasses.asdict`` of one in a checkpoint.

    Values are taken literally: a string holding "${...}" is not an interpolation.
    """
    return _build([(_escape(d), lambda key: source)])


def config_to_yaml(cfg: Config) -> str:
    # OmegaConf's dumper quotes strings its loader would read back as numbers (e.g. "1e-3").
    return OmegaConf.to_yaml(OmegaConf.create(_escape(dataclasses.asdict(cfg))))


def save_config(cfg: Config, path: str | Path) -> None:
    """Write ``cfg`` as YAML atomically: a crash never leaves a half-written file at ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(config_to_yaml(cfg))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _escape(value: Any) -> Any:
    """Escape "${" in strings so that OmegaConf reads them back literally, not as interpolations."""
    if isinstance(value, str):
        return value.replace("${", "\\${")
    if isinstance(value, dict):
        return {k: _escape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_escape(v) for v in value]
    return value


# --- reading -------------------------------------------------------------------------------------


def _read_yaml(path: Path, name: str) -> tuple[dict, Where]:
    if path.is_dir():
        raise ConfigError(f"config path {name} is a folder; pass a .yaml file inside it")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {name} not found; check the path") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {name} is not UTF-8 text; is it a YAML file?") from None
    except (OSError, ValueError) as e:  # permissions, a NUL byte in the path, ...
        raise ConfigError(f"cannot read config file {name}: {_first_line(e)}") from None
    try:
        # compose() keeps line numbers; OmegaConf then builds the values with its own YAML rules
        # (1e-3 is a float, duplicate keys are errors), the same rules the overrides use.
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except (yaml.YAMLError, RecursionError) as e:
        raise _yaml_error(e, name) from None
    if root is None:
        raise ConfigError(
            f"config file {name} is empty; add settings, or pass no file to use the defaults"
        )
    if not isinstance(root, yaml.MappingNode):
        what = "a list" if isinstance(root, yaml.SequenceNode) else f"the value {root.value!r}"
        raise ConfigError(
            f"config file {name} holds {what}; it must be a mapping of sections such as "
            f"'optim:' and 'train:'"
        )
    lines = _key_lines(root)
    try:
        values = OmegaConf.to_container(OmegaConf.create(text))
    except (yaml.YAMLError, RecursionError) as e:
        raise _yaml_error(e, name) from None
    except (OmegaConfBaseException, ValueError) as e:
        # e.g. "!!float abc" or a date: valid YAML, but not a value a config can hold
        key = getattr(e, "full_key", None)
        at = f"{name}:{lines[key]}" if key in lines else name
        raise ConfigError(f"unsupported value in {at}: {_first_line(e)}") from None

    def where(key: str) -> str:
        key = key.split("[")[0]
        line = lines.get(key) or lines.get(key.split(".")[0])
        return f"{name}:{line}" if line else name

    return values, where


def _yaml_error(e: BaseException, name: str) -> ConfigError:
    mark = getattr(e, "problem_mark", None)
    at = f"{name}:{mark.line + 1}" if mark else name
    problem = _yaml_problem(e)
    fix = "keep only one" if "duplicate key" in problem else "fix the syntax there"
    return ConfigError(f"invalid YAML in {at}: {problem}; {fix}")


def _key_lines(node: yaml.Node, prefix: str = "") -> dict[str, int]:
    """Map ``section`` and ``section.key`` in a composed YAML mapping to 1-based line numbers."""
    lines: dict[str, int] = {}
    for key_node, value_node in node.value:
        key = f"{prefix}{key_node.value}"
        lines[key] = key_node.start_mark.line + 1
        # Two levels is the whole schema; going deeper could loop on a recursive YAML alias.
        if not prefix and isinstance(value_node, yaml.MappingNode):
            lines.update(_key_lines(value_node, f"{key}."))
    return lines


def _parse_override(text: str) -> dict:
    """``optim.lr=0.1`` -> ``{"optim": {"lr": 0.1}}``; the value is parsed as YAML."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep:
        raise ConfigError(f"override '{text}' has no '='; write key=value, e.g. optim.lr=0.1")
    if not key:
        raise ConfigError(f"override '{text}' has an empty key; write key=value, e.g. optim.lr=0.1")
    if not all(_NAME.fullmatch(part) for part in key.split(".")):
        raise ConfigError(
            f"override '{text}': {key!r} is not a dotted key like optim.lr; "
            f"to set a list write e.g. model.hidden=[32,16]"
        )
    try:
        return OmegaConf.to_container(OmegaConf.from_dotlist([f"{key}={value}"]))
    except (yaml.YAMLError, OmegaConfBaseException, ValueError, RecursionError) as e:
        raise ConfigError(
            f"override '{text}': cannot parse the value as YAML ({_yaml_problem(e)}); "
            f"quote strings, write lists as [a,b]"
        ) from None


# --- merging -------------------------------------------------------------------------------------


def _build(layers: list[tuple[dict, Where]]) -> Config:
    origins: dict[str, str] = {}  # dotted key -> where its final value was set
    # Building the schema is most of the cost of a load; copy a cached one and merge in place.
    merged = copy.deepcopy(_defaults())
    for values, where in layers:
        values = _check_keys(values, where)
        for key in _keys(values):
            origins[key] = where(key)
        try:
            OmegaConf.unsafe_merge(merged, values)
        except OmegaConfBaseException as e:
            raise _type_error(e, values, where) from None

    def origin(key: str) -> str:
        key = key.split("[")[0]
        return origins.get(key) or origins.get(key.split(".")[0], "default")

    try:
        # Interpolations such as ${optim.lr} are resolved here, so errors can still happen.
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "config"
        raise ConfigError(f"{key}: {_first_line(e)} ({origin(key)})") from None
    assert isinstance(cfg, Config)
    cfg.loss.pos_weight = _pos_weight(cfg.loss.pos_weight, origin)
    _validate(cfg, origin)
    return cfg


@functools.cache
def _defaults() -> DictConfig:
    return OmegaConf.structured(Config)


def _check_keys(values: Any, where: Where) -> dict:
    """Fail on anything that is not a mapping of known sections holding known keys."""
    if not isinstance(values, dict):
        raise ConfigError(
            f"config in {where('')} must be a mapping of sections, got {_describe(values)}"
        )
    checked = {}
    for section, keys in values.items():
        if section not in _SCHEMA:
            raise ConfigError(
                f"unknown key {str(section)!r} in {where(str(section))}; "
                f"{_suggest_section(str(section))}"
            )
        if keys is None:
            continue  # "optim:" with every key commented out parses as null: nothing to change
        if not isinstance(keys, dict):
            first = next(iter(_SCHEMA[section]))
            raise ConfigError(
                f"section '{section}' in {where(section)} must be a mapping of keys, got "
                f"{_describe(keys)}; write e.g. '{section}: {{{first}: ...}}'"
            )
        for key in keys:
            if key not in _SCHEMA[section]:
                dotted = f"{section}.{key}"
                raise ConfigError(
                    f"unknown key {dotted!r} in {where(dotted)}; {_suggest_key(section, str(key))}"
                )
        checked[section] = keys
    return checked


def _suggest_section(name: str) -> str:
    if name in _DOTTED:  # "optim.lr: 0.1" written flat in a YAML file
        section, key = name.split(".", 1)
        return f"nest it: '{section}:' then '  {key}: ...' on the next line"
    sections = [s for s, keys in _SCHEMA.items() if name in keys]
    if sections:  # a key written without its section
        return f"did you mean '{sections[0]}.{name}'?"
    return _nearest(name, list(_SCHEMA), "sections are " + ", ".join(_SCHEMA))


def _suggest_key(section: str, key: str) -> str:
    close = difflib.get_close_matches(key, list(_SCHEMA[section]), n=1)
    if close:
        return f"did you mean '{section}.{close[0]}'?"
    # A (misspelt) key of another section, e.g. optim.epoch -> train.epochs.
    leaves = {k: s for s, keys in _SCHEMA.items() for k in keys if s != section}
    close = difflib.get_close_matches(key, list(leaves), n=1)
    if close:
        return f"did you mean '{leaves[close[0]]}.{close[0]}'?"
    return f"'{section}' keys are " + ", ".join(_SCHEMA[section])


def _nearest(name: str, choices: list[str], fallback: str) -> str:
    close = difflib.get_close_matches(name, choices, n=1)
    return f"did you mean '{close[0]}'?" if close else fallback


def _keys(values: dict) -> list[str]:
    return [*values, *(f"{s}.{k}" for s, keys in values.items() for k in keys)]


def _type_error(e: OmegaConfBaseException, values: dict, where: Where) -> ConfigError:
    """Turn OmegaConf's validation error into 'key must be <type>, got <value> (where)'."""
    key = (getattr(e, "full_key", None) or "").split("[")[0]
    section, _, name = key.partition(".")
    if name in _SCHEMA.get(section, {}):
        expected = _type_name(_SCHEMA[section][name])
        got = values.get(section, {}).get(name)
        return ConfigError(f"{key} must be {expected}, got {_describe(got)} ({where(key)})")
    return ConfigError(f"{key or 'config'}: {_first_line(e)} ({where(key)})")


def _type_name(tp: Any) -> str:
    args = [a for a in get_args(tp) if a is not type(None)]
    if len(args) < len(get_args(tp)):  # Optional
        return f"{_type_name(args[0])} or null"
    if get_origin(tp) is list:
        return f"a list of {_type_name(args[0]).removeprefix('a ').removeprefix('an ')}s"
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    return names.get(tp, "a value")


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return f"the list {value!r}"
    return "null" if value is None else repr(value)


def _yaml_problem(e: BaseException) -> str:
    return getattr(e, "problem", None) or _first_line(e)


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


# --- checks on values ----------------------------------------------------------------------------


def _pos_weight(value: Any, origin: Where) -> float | str | None:
    # Typed Any in the schema (OmegaConf unions reject ints), so it is checked by hand here.
    if value is None or value == "balanced":
        return value
    number = math.nan
    if isinstance(value, (int, float, str)) and not isinstance(value, bool):
        with contextlib.suppress(ValueError):  # "2.5" from a quoted YAML value is fine
            number = float(value)
    if not 0 < number < math.inf:
        raise ConfigError(
            f"loss.pos_weight must be null, a positive number or 'balanced', got "
            f"{_describe(value)} ({origin('loss.pos_weight')})"
        )
    return number


def _validate(cfg: Config, origin: Where) -> None:
    """Range and cross-field checks, on the typed config."""

    def check(ok: bool, key: str, requirement: str) -> None:
        if not ok:
            section, name = key.split(".")
            value = getattr(getattr(cfg, section), name)
            raise ConfigError(f"{key} must be {requirement}, got {value!r} ({origin(key)})")

    def choice(key: str, choices: Sequence[str]) -> None:
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if value not in choices:
            hint = _nearest(str(value), list(choices), "")
            raise ConfigError(
                f"{key} must be one of {', '.join(choices)}, got {value!r} ({origin(key)})"
                + (f"; {hint}" if hint else "")
            )

    def fraction(x: float) -> bool:
        return 0 <= x < 1

    def non_negative(x: float) -> bool:
        return 0 <= x < math.inf  # also rejects nan and inf

    def positive(x: float) -> bool:
        return 0 < x < math.inf

    data, model, loss = cfg.data, cfg.model, cfg.loss
    optim, train, log = cfg.optim, cfg.train, cfg.log
    choice("data.source", DATA_SOURCES)
    if data.source in ("csv", "npy") and not data.path:
        example = "data/train.csv" if data.source == "csv" else "a folder with X.npy and y.npy"
        raise ConfigError(
            f"data.path is required when data.source is '{data.source}' "
            f"({origin('data.source')}); set data.path to {example}"
        )
    check(
        data.features is None or len(data.features) > 0,
        "data.features",
        "null (every column but the target) or a non-empty list of column names",
    )
    check(fraction(data.val_fraction), "data.val_fraction", "in [0, 1)")
    check(fraction(data.test_fraction), "data.test_fraction", "in [0, 1)")
    if data.val_fraction + data.test_fraction >= 1:
        raise ConfigError(
            f"data.val_fraction + data.test_fraction must be < 1 to leave data to train on, got "
            f"{data.val_fraction} ({origin('data.val_fraction')}) + {data.test_fraction} "
            f"({origin('data.test_fraction')})"
        )
    check(data.chunk_size >= 1, "data.chunk_size", ">= 1")
    check(data.n_samples >= 2, "data.n_samples", ">= 2")
    check(data.n_features >= 1, "data.n_features", ">= 1")
    check(
        1 <= data.n_informative <= data.n_features,
        "data.n_informative",
        f"between 1 and data.n_features ({data.n_features})",
    )
    check(-math.inf < data.class_sep < math.inf, "data.class_sep", "a finite number")
    # The same rule as data.make_classification, so a bad value fails at load time.
    weights = data.weights
    if weights is not None and len(weights) == 1:  # [w0] means [w0, 1 - w0]
        weights = [weights[0], 1 - weights[0]]
    check(
        weights is None
        or (len(weights) == 2 and all(0 < w < 1 for w in weights) and abs(sum(weights) - 1) < 1e-6),
        "data.weights",
        "null, or class proportions [w0, w1] > 0 summing to 1 (or just [w0])",
    )

    choice("model.name", MODELS)
    check(all(h >= 1 for h in model.hidden), "model.hidden", "a list of layer sizes >= 1")
    check(
        model.name != "mlp" or len(model.hidden) > 0,
        "model.hidden",
        "non-empty for model.name 'mlp' (use model.name 'logistic' for no hidden layer)",
    )
    check(fraction(model.dropout), "model.dropout", "in [0, 1)")

    check(fraction(loss.label_smoothing), "loss.label_smoothing", "in [0, 1)")
    check(non_negative(loss.l2), "loss.l2", ">= 0")
    check(non_negative(loss.l1), "loss.l1", ">= 0")

    choice("optim.name", OPTIMIZERS)
    check(positive(optim.lr), "optim.lr", "> 0")
    check(non_negative(optim.momentum), "optim.momentum", ">= 0")
    check(non_negative(optim.weight_decay), "optim.weight_decay", ">= 0")
    choice("optim.scheduler", SCHEDULERS)
    check(optim.step_size >= 1, "optim.step_size", ">= 1")
    check(0 < optim.gamma < 1, "optim.gamma", "a decay factor in (0, 1)")
    check(optim.max_iter >= 1, "optim.max_iter", ">= 1")
    check(non_negative(optim.tol), "optim.tol", ">= 0")
    check(optim.history_size >= 1, "optim.history_size", ">= 1")

    check(train.epochs >= 1, "train.epochs", ">= 1")
    check(
        train.batch_size is None or train.batch_size >= 1,
        "train.batch_size",
        "null (full batch) or >= 1",
    )
    if optim.name == "lbfgs" and train.batch_size is not None:
        raise ConfigError(
            f"optim.name 'lbfgs' ({origin('optim.name')}) needs full-batch training but "
            f"train.batch_size is {train.batch_size} ({origin('train.batch_size')}); "
            f"set train.batch_size: null"
        )
    check(
        train.early_stopping_patience is None or train.early_stopping_patience >= 1,
        "train.early_stopping_patience",
        "null (off) or >= 1",
    )
    check(non_negative(train.early_stopping_min_delta), "train.early_stopping_min_delta", ">= 0")
    check(
        train.grad_clip is None or positive(train.grad_clip), "train.grad_clip", "null (off) or > 0"
    )
    choice("train.precision", PRECISIONS)
    check(bool(_DEVICE.fullmatch(train.device)), "train.device", "auto, cpu, cuda or cuda:N")
    check(0 <= train.seed < 2**32, "train.seed", "in [0, 2**32)")
    check(train.checkpoint_every >= 1, "train.checkpoint_every", ">= 1")
    check(
        train.dist_backend is None or train.dist_backend in DIST_BACKENDS,
        "train.dist_backend",
        "null (pick by device), gloo or nccl",
    )
    check(positive(train.dist_timeout), "train.dist_timeout", "> 0 seconds")

    check(log.log_every >= 1, "log.log_every", ">= 1")
    check(log.histogram_every >= 0, "log.histogram_every", ">= 0 (0 = off)")
