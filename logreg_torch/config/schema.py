"""The config schema: one dataclass per section, nested in one root ``Config``; defaults live
here. The choices each key allows and the schema read back from the dataclasses."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, get_type_hints


@dataclass
class DataConfig:
    source: str = "jackets"  # csv | npy | synthetic | jackets | breast_cancer
    path: str | None = None  # csv file, npy folder / .npz file
    target: str | None = None  # target column (csv); bundled sets know their own
    features: list[str] | None = None  # null = every column but the target
    positive_label: str | None = None  # label value mapped to 1 (default rule: data/labels.py)
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
    name: str = "adam"  # sgd | adam | adamw | lbfgs | newton (README: the solvers table)
    lr: float = 0.05  # sgd/adam/adamw step size; unused by lbfgs and newton (line searches)
    momentum: float = 0.0
    weight_decay: float = 0.0
    scheduler: str = "none"  # none | step | cosine | plateau
    step_size: int = 10  # step scheduler: epochs between decays
    gamma: float = 0.5  # step / plateau decay factor
    # lbfgs / newton: iterations in all, over every epoch (each epoch gets an equal share)
    max_iter: int = 100
    # lbfgs / newton stop when max|grad| of the penalized objective <= tol (scikit-learn's rule)
    tol: float = 1e-7
    history_size: int = 10  # lbfgs
    lbfgs_lr: float = 1.0  # lbfgs: the first trial step of each line search
    # lbfgs / newton in fp32: when float32 rounding stops the solver above tol, finish in
    # float64 (a float64 copy of the data for those iterations); false: stop and say so
    fp64_finish: bool = True


@dataclass
class TrainConfig:
    epochs: int = 20
    batch_size: int | None = 64  # null = full batch
    early_stopping_patience: int | None = None  # epochs without val-loss improvement; null = off
    early_stopping_min_delta: float = 0.0
    grad_clip: float | None = None  # max gradient norm
    precision: str = "fp32"  # fp32 | fp64 | bf16 | fp16 (bf16/fp16: autocast mixed precision)
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    seed: int = 0
    deterministic: bool = False
    checkpoint_every: int = 1  # epochs between last.pt writes
    resume: str | None = None  # path to a last.pt / best.pt
    fast_path: bool = True  # fused linear+loss kernels when they apply
    compile: bool = False  # torch.compile the model
    # CUDA: capture the minibatch step (gather, loss, backward, adam/adamw update) once in a
    # CUDA graph and replay it every step (logreg_torch.graphs)
    cuda_graphs: bool = False
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
OPTIMIZERS = ("sgd", "adam", "adamw", "lbfgs", "newton")
FULL_BATCH_SOLVERS = ("lbfgs", "newton")
SCHEDULERS = ("none", "step", "cosine", "plateau")
PRECISIONS = ("fp32", "fp64", "bf16", "fp16")
DIST_BACKENDS = ("gloo", "nccl")
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# section name -> {key -> type}, read from the dataclasses so the schema has one source of truth.
_SCHEMA: dict[str, dict[str, Any]] = {
    section: get_type_hints(cls) for section, cls in get_type_hints(Config).items()
}
_DOTTED = [f"{section}.{key}" for section, keys in _SCHEMA.items() for key in keys]

# Where a key was set: "configs/x.yaml:4", "override 'optim.lr=1'", ...
Where = Callable[[str], str]
