"""Checks on values: the range and cross-field rules of each section, one validator per
section, run on the typed config in schema order (the first broken rule is the one reported)."""

from __future__ import annotations

import contextlib
import difflib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from logreg_torch.config.schema import (
    _DEVICE,
    DATA_SOURCES,
    DIST_BACKENDS,
    FULL_BATCH_SOLVERS,
    MODELS,
    OPTIMIZERS,
    PRECISIONS,
    SCHEDULERS,
    Config,
    ConfigError,
    DataConfig,
    LogConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    TrainConfig,
    Where,
)


def validate(cfg: Config, origin: Where) -> None:
    """Range and cross-field checks, on the typed config."""
    c = _Checks(cfg, origin)
    _check_data(c, cfg.data)
    _check_model(c, cfg.model)
    _check_loss(c, cfg.loss)
    _check_optim(c, cfg.optim)
    _check_train(c, cfg.train, cfg.optim)
    _check_log(c, cfg.log)
    _check_newton(c, cfg)
    _check_cuda_graphs(c, cfg)


@dataclass
class _Checks:
    """The two kinds of rule, each failing with 'key must be ..., got value (where)'."""

    cfg: Config
    origin: Where

    def value(self, key: str) -> Any:
        section, name = key.split(".")
        return getattr(getattr(self.cfg, section), name)

    def check(self, ok: bool, key: str, requirement: str) -> None:
        if not ok:
            value = self.value(key)
            raise ConfigError(f"{key} must be {requirement}, got {value!r} ({self.origin(key)})")

    def choice(self, key: str, choices: Sequence[str]) -> None:
        value = self.value(key)
        if value not in choices:
            hint = _nearest(str(value), list(choices), "")
            raise ConfigError(
                f"{key} must be one of {', '.join(choices)}, got {value!r} ({self.origin(key)})"
                + (f"; {hint}" if hint else "")
            )


def fraction(x: float) -> bool:
    return 0 <= x < 1


def non_negative(x: float) -> bool:
    return 0 <= x < math.inf  # also rejects nan and inf


def positive(x: float) -> bool:
    return 0 < x < math.inf


def _check_data(c: _Checks, data: DataConfig) -> None:
    c.choice("data.source", DATA_SOURCES)
    if data.source in ("csv", "npy") and not data.path:
        example = "data/train.csv" if data.source == "csv" else "a folder with X.npy and y.npy"
        raise ConfigError(
            f"data.path is required when data.source is '{data.source}' "
            f"({c.origin('data.source')}); set data.path to {example}"
        )
    c.check(
        data.features is None or len(data.features) > 0,
        "data.features",
        "null (every column but the target) or a non-empty list of column names",
    )
    c.check(fraction(data.val_fraction), "data.val_fraction", "in [0, 1)")
    c.check(fraction(data.test_fraction), "data.test_fraction", "in [0, 1)")
    if data.val_fraction + data.test_fraction >= 1:
        raise ConfigError(
            f"data.val_fraction + data.test_fraction must be < 1 to leave data to train on, got "
            f"{data.val_fraction} ({c.origin('data.val_fraction')}) + {data.test_fraction} "
            f"({c.origin('data.test_fraction')})"
        )
    c.check(data.chunk_size >= 1, "data.chunk_size", ">= 1")
    c.check(data.n_samples >= 2, "data.n_samples", ">= 2")
    c.check(data.n_features >= 1, "data.n_features", ">= 1")
    c.check(
        1 <= data.n_informative <= data.n_features,
        "data.n_informative",
        f"between 1 and data.n_features ({data.n_features})",
    )
    c.check(-math.inf < data.class_sep < math.inf, "data.class_sep", "a finite number")
    # The same rule as data.make_classification, so a bad value fails at load time.
    weights = data.weights
    if weights is not None and len(weights) == 1:  # [w0] means [w0, 1 - w0]
        weights = [weights[0], 1 - weights[0]]
    c.check(
        weights is None
        or (len(weights) == 2 and all(0 < w < 1 for w in weights) and abs(sum(weights) - 1) < 1e-6),
        "data.weights",
        "null, or class proportions [w0, w1] > 0 summing to 1 (or just [w0])",
    )


def _check_model(c: _Checks, model: ModelConfig) -> None:
    c.choice("model.name", MODELS)
    c.check(all(h >= 1 for h in model.hidden), "model.hidden", "a list of layer sizes >= 1")
    c.check(
        model.name != "mlp" or len(model.hidden) > 0,
        "model.hidden",
        "non-empty for model.name 'mlp' (use model.name 'logistic' for no hidden layer)",
    )
    c.check(fraction(model.dropout), "model.dropout", "in [0, 1)")


def _check_loss(c: _Checks, loss: LossConfig) -> None:
    c.check(fraction(loss.label_smoothing), "loss.label_smoothing", "in [0, 1)")
    c.check(non_negative(loss.l2), "loss.l2", ">= 0")
    c.check(non_negative(loss.l1), "loss.l1", ">= 0")


def _check_optim(c: _Checks, optim: OptimConfig) -> None:
    c.choice("optim.name", OPTIMIZERS)
    c.check(positive(optim.lr), "optim.lr", "> 0")
    c.check(non_negative(optim.momentum), "optim.momentum", ">= 0")
    c.check(non_negative(optim.weight_decay), "optim.weight_decay", ">= 0")
    c.choice("optim.scheduler", SCHEDULERS)
    c.check(optim.step_size >= 1, "optim.step_size", ">= 1")
    c.check(0 < optim.gamma < 1, "optim.gamma", "a decay factor in (0, 1)")
    c.check(optim.max_iter >= 1, "optim.max_iter", ">= 1")
    c.check(non_negative(optim.tol), "optim.tol", ">= 0")
    c.check(optim.history_size >= 1, "optim.history_size", ">= 1")
    c.check(positive(optim.lbfgs_lr), "optim.lbfgs_lr", "> 0")


def _check_train(c: _Checks, train: TrainConfig, optim: OptimConfig) -> None:
    c.check(train.epochs >= 1, "train.epochs", ">= 1")
    c.check(
        train.batch_size is None or train.batch_size >= 1,
        "train.batch_size",
        "null (full batch) or >= 1",
    )
    if optim.name in FULL_BATCH_SOLVERS and train.batch_size is not None:
        raise ConfigError(
            f"optim.name '{optim.name}' ({c.origin('optim.name')}) needs full-batch training but "
            f"train.batch_size is {train.batch_size} ({c.origin('train.batch_size')}); "
            f"set train.batch_size: null"
        )
    c.check(
        train.early_stopping_patience is None or train.early_stopping_patience >= 1,
        "train.early_stopping_patience",
        "null (off) or >= 1",
    )
    c.check(non_negative(train.early_stopping_min_delta), "train.early_stopping_min_delta", ">= 0")
    c.check(
        train.grad_clip is None or positive(train.grad_clip), "train.grad_clip", "null (off) or > 0"
    )
    c.choice("train.precision", PRECISIONS)
    c.check(bool(_DEVICE.fullmatch(train.device)), "train.device",
            "auto, cpu, cuda, cuda:N or mps")
    c.check(0 <= train.seed < 2**32, "train.seed", "in [0, 2**32)")
    c.check(train.checkpoint_every >= 1, "train.checkpoint_every", ">= 1")
    c.check(
        train.dist_backend is None or train.dist_backend in DIST_BACKENDS,
        "train.dist_backend",
        "null (pick by device), gloo or nccl",
    )
    c.check(positive(train.dist_timeout), "train.dist_timeout", "> 0 seconds")


def _check_newton(c: _Checks, cfg: Config) -> None:
    """Newton needs a convex, twice-differentiable objective in full precision."""
    if cfg.optim.name != "newton":
        return
    where = c.origin("optim.name")
    if cfg.model.name != "logistic":
        raise ConfigError(
            f"optim.name 'newton' ({where}) needs model.name 'logistic' (a convex objective); "
            f"model.name is '{cfg.model.name}' ({c.origin('model.name')}); use optim.name "
            f"lbfgs or adam for the mlp")
    if cfg.loss.l1:
        raise ConfigError(
            f"optim.name 'newton' ({where}) cannot take loss.l1 = {cfg.loss.l1} "
            f"({c.origin('loss.l1')}): |w| has no second derivative at 0; use loss.l2, or "
            f"optim.name adam / sgd for an l1 penalty")
    if cfg.train.precision not in ("fp32", "fp64"):
        raise ConfigError(
            f"optim.name 'newton' ({where}) needs train.precision fp32 or fp64, got "
            f"'{cfg.train.precision}' ({c.origin('train.precision')})")


def _check_cuda_graphs(c: _Checks, cfg: Config) -> None:
    """What a captured step cannot do: change its learning rate (a scheduler), skip a step
    (fp16's GradScaler), or be something other than one minibatch step of adam / adamw on one
    process's in-memory rows (the device and the world size are checked where they are known,
    logreg_torch.graphs)."""
    if not cfg.train.cuda_graphs:
        return
    t, o = cfg.train, cfg.optim
    refused = {
        "optim.name": (o.name not in ("adam", "adamw"), f"'{o.name}'", "adam or adamw"),
        "train.batch_size": (t.batch_size is None, "null", "minibatches"),
        "optim.scheduler": (o.scheduler != "none", f"'{o.scheduler}'",
                            "none (a captured step keeps its learning rate)"),
        "train.precision": (t.precision == "fp16", "'fp16'", "fp32, fp64 or bf16 (no "
                            "GradScaler)"),
        "train.compile": (t.compile, "true", "false (compile has its own graphs: "
                          "mode='reduce-overhead')"),
        "data.streaming": (cfg.data.streaming, "true", "in-memory rows"),
    }
    for key, (bad, value, wanted) in refused.items():
        if bad:
            raise ConfigError(
                f"train.cuda_graphs=true ({c.origin('train.cuda_graphs')}) needs {key} "
                f"{wanted}, got {value} ({c.origin(key)}); or set train.cuda_graphs: false")


def _check_log(c: _Checks, log: LogConfig) -> None:
    c.check(log.log_every >= 1, "log.log_every", ">= 1")
    c.check(log.histogram_every >= 0, "log.histogram_every", ">= 0 (0 = off)")


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



def _nearest(name: str, choices: list[str], fallback: str) -> str:
    close = difflib.get_close_matches(name, choices, n=1)
    return f"did you mean '{close[0]}'?" if close else fallback



def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return f"the list {value!r}"
    return "null" if value is None else repr(value)
