"""Typed configuration: one dataclass per section, merged with OmegaConf.

Defaults live in ``schema``; a YAML file and then ``key=value`` overrides change them
(``load``). Every mistake a user can make in either becomes a one-line ``ConfigError`` naming
the dotted key and where it was written (``file:line`` or the override); the range and
cross-field rules of each section are in ``validate``.
"""

from logreg_torch.config.load import config_from_dict, config_to_yaml, load_config, save_config
from logreg_torch.config.schema import (
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
)

__all__ = [
    "DATA_SOURCES", "DIST_BACKENDS", "FULL_BATCH_SOLVERS", "MODELS", "OPTIMIZERS", "PRECISIONS",
    "SCHEDULERS", "Config",
    "ConfigError", "DataConfig", "LogConfig", "LossConfig", "ModelConfig", "OptimConfig",
    "TrainConfig", "config_from_dict", "config_to_yaml", "load_config", "save_config",
]
