"""Loading: defaults, then a YAML file, then ``key=value`` overrides, merged with OmegaConf;
saving a resolved config. Every mistake becomes a one-line ``ConfigError`` naming the dotted
key and where it was written (``file:line`` or the override)."""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, get_args, get_origin

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from logreg_torch.config.schema import _DOTTED, _NAME, _SCHEMA, Config, ConfigError, Where
from logreg_torch.config.validate import _describe, _nearest, _pos_weight, validate
from logreg_torch.interrupts import critical


# Ctrl-C is held until this returns (and config_from_dict, config_to_yaml): cut inside
# OmegaConf, its own clean-up fails on the half-built node and turns the interrupt into a
# ConfigKeyError with a traceback.
@critical()
def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> Config:
    """Defaults, then the YAML file at ``path`` (if any), then ``key=value`` overrides."""
    layers: list[tuple[dict, Where]] = []
    if path is not None:
        layers.append(_read_yaml(Path(path), str(path)))
    for text in overrides:
        layers.append((_parse_override(text), lambda key, text=text: f"override '{text}'"))
    return _build(layers)


@critical()
def config_from_dict(d: dict, source: str = "config dict") -> Config:
    """Rebuild and validate a resolved config, e.g. ``dataclasses.asdict`` of one in a checkpoint.

    Values are taken literally: a string holding "${...}" is not an interpolation.
    """
    return _build([(_escape(d), lambda key: source)])


@critical()
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
        values = _as_written(OmegaConf.to_container(OmegaConf.create(text)), root, "")
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
        values = OmegaConf.to_container(OmegaConf.from_dotlist([f"{key}={value}"]))
        node = yaml.compose(value, Loader=yaml.SafeLoader)
    except (yaml.YAMLError, OmegaConfBaseException, ValueError, RecursionError) as e:
        raise ConfigError(
            f"override '{text}': cannot parse the value as YAML ({_yaml_problem(e)}); "
            f"quote strings, write lists as [a,b]"
        ) from None
    *parents, last = key.split(".")
    inner = values
    for part in parents:
        inner = inner[part]
    inner[last] = _as_written(inner[last], node, key)
    return values


# Keys whose schema type is text (or a list of texts), e.g. data.positive_label, data.features.
_TEXT_KEYS = frozenset(
    f"{section}.{key}" for section, keys in _SCHEMA.items() for key, tp in keys.items()
    if str in (tp, *get_args(tp)) or list[str] in (tp, *get_args(tp)))


def _as_written(value: Any, node: yaml.Node | None, key: str) -> Any:
    """``value`` as YAML parsed it, but a text key keeps the text the user wrote.

    YAML 1.1 (PyYAML, OmegaConf) reads an unquoted yes/no/on/off/true/false as a boolean and
    01 as the number 1; a string field would then hold 'True' or '1', which matches no label
    'yes' or '01'. ``node`` is the composed YAML of ``value``; ``key`` its dotted name."""
    if isinstance(node, yaml.MappingNode) and isinstance(value, dict):
        for key_node, value_node in node.value:
            name = key_node.value
            if name in value:
                dotted = f"{key}.{name}" if key else name
                value[name] = _as_written(value[name], value_node, dotted)
        return value
    if key not in _TEXT_KEYS or value is None:
        return value
    if isinstance(node, yaml.ScalarNode):
        return node.value
    if isinstance(node, yaml.SequenceNode) and isinstance(value, list):
        return [n.value if isinstance(n, yaml.ScalarNode) and v is not None else v
                for n, v in zip(node.value, value, strict=False)]
    return value


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
        # The layer that set the key, or a mapping above it (data.columns for data.columns.x);
        # a section alone is not one: a layer that set train.epochs did not set train.batch_size.
        parts = key.split("[")[0].split(".")
        above = [".".join(parts[:n]) for n in range(len(parts), 1, -1)] or parts
        return next((origins[k] for k in above if k in origins), "default")

    try:
        # Interpolations such as ${optim.lr} are resolved here, so errors can still happen.
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "config"
        raise ConfigError(f"{key}: {_first_line(e)} ({origin(key)})") from None
    assert isinstance(cfg, Config)
    cfg.loss.pos_weight = _pos_weight(cfg.loss.pos_weight, origin)
    validate(cfg, origin)
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


def _yaml_problem(e: BaseException) -> str:
    return getattr(e, "problem", None) or _first_line(e)


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]
