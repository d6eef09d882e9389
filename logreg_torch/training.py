"""``Training``: everything one fit trains with, built once from its config by ``set_up``:
the data on the device (sharded under torchrun, column-major for the fused full batch), the
model (compiled and/or wrapped in DDP), the objective, the optimizer, scheduler and scaler."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from logreg_torch.config import FULL_BATCH_SOLVERS, Config, ConfigError
from logreg_torch.data import Prepared, Stream, prepare, prepare_streaming
from logreg_torch.fullbatch import SolveState
from logreg_torch.graphs import StepGraph, check_runtime
from logreg_torch.model import build_model
from logreg_torch.objective import Objective, fast_path_applies, make_objective
from logreg_torch.runs import Ending, Progress, checkpoint_state
from logreg_torch.runtime import Runtime
from logreg_torch.solvers import make_optimizer, make_scheduler


@dataclass
class Training:
    """Everything one fit trains with, built once from the config."""

    cfg: Config
    runtime: Runtime
    data: Prepared
    stream: Stream | None  # data.streaming: the training rows stay on disk
    X: Tensor  # this rank's training rows on the device (empty when streaming)
    y: Tensor
    n_global: int  # training rows over all ranks
    val: tuple[Tensor, Tensor]
    test: tuple[Tensor, Tensor]
    model: nn.Module
    train_model: nn.Module  # the model, compiled and/or wrapped in DDP: the same parameters
    objective: Objective
    optimizer: torch.optim.Optimizer | None  # None for newton
    scheduler: Any
    scaler: torch.amp.GradScaler | None
    # seconds spent so far: data, setup (the rest of set_up), train (epochs), evaluate
    timings: dict[str, float] = field(
        default_factory=lambda: dict.fromkeys(("data", "setup", "train", "evaluate"), 0.0))
    # seconds within the evaluate stage: predict (logits, loss) and metrics
    evaluate_seconds: dict[str, float] = field(default_factory=dict)
    solve: SolveState = field(default_factory=SolveState)  # full-batch solvers
    ending: Ending | None = None  # once the run has ended
    step_graph: StepGraph | None = None  # train.cuda_graphs: the captured minibatch step
    bars: Any = None  # the progress bars (logreg_torch.progress), when shown

    @property
    def solver(self) -> bool:
        """A full-batch solver (lbfgs, newton): iterations, not epochs, are what it counts."""
        return self.cfg.optim.name in FULL_BATCH_SOLVERS

    @property
    def best_is_last(self) -> bool:
        """best.pt holds the last epoch's weights: a full-batch solver's model is the point its
        solve reached (the one its ending describes), unless the config asks for a choice by
        validation loss (early stopping on a validation split)."""
        by_val = self.cfg.train.early_stopping_patience is not None and len(self.val[0]) > 0
        return self.solver and not by_val

    def state(self, progress: Progress, epoch: int) -> dict[str, Any]:
        return checkpoint_state(self.cfg, self.data, self.model, self.optimizer, self.scheduler,
                                self.scaler, progress, epoch,
                                None if self.ending is None else self.ending.as_dict())


def set_up(cfg: Config, runtime: Runtime) -> Training:
    if cfg.train.cuda_graphs:
        check_runtime(runtime)  # before the data is read
    full_batch = cfg.train.batch_size is None or cfg.optim.name in FULL_BATCH_SOLVERS
    # Full batch on the fast path: store X column-major (each feature contiguous). Both
    # matrix-vector products then stream X at memory speed; row-major X makes torch.mv
    # several times slower than one read of X. (Minibatches gather rows: row-major.)
    column_major = fast_path_applies(cfg) and full_batch
    world = runtime.world_size
    # One process on the CPU: the data is read straight into that layout, with no second copy.
    direct = column_major and world == 1 and runtime.device.type == "cpu"
    started = time.perf_counter()
    stream, data, n_global, train_targets = _load_data(cfg, runtime, full_batch, direct)
    data_seconds = time.perf_counter() - started
    train_rows = data.train if world == 1 else _shard(data.train, runtime.rank, world,
                                                      not full_batch)
    X, y = (t.to(runtime.device) for t in train_rows)
    if column_major and not (X.dim() == 2 and X.stride(0) == 1):
        X = X.t().contiguous().t()
    val = tuple(t.to(runtime.device) for t in data.val)
    test = tuple(t.to(runtime.device) for t in data.test)
    model = build_model(cfg.model.name, len(data.feature_names), cfg.model.hidden,
                        cfg.model.dropout, cfg.model.bias).to(device=runtime.device,
                                                              dtype=runtime.dtype)
    train_model = _train_model(model, cfg, runtime, full_batch)
    # pos_weight "balanced" from the whole training split, the same on every rank
    objective = make_objective(cfg, train_targets, runtime.device, runtime.dtype)
    optimizer = make_optimizer(cfg, model)
    scheduler = make_scheduler(cfg, optimizer)
    scaler = (torch.amp.GradScaler(runtime.device.type)
              if cfg.train.precision == "fp16" else None)
    t = Training(cfg, runtime, data, stream, X, y, n_global, val, test, model, train_model,
                 objective, optimizer, scheduler, scaler)
    t.timings["data"] = data_seconds
    if cfg.train.cuda_graphs:
        t.step_graph = StepGraph(train_model, optimizer, objective, X, y, cfg.train.batch_size,
                                 runtime, cfg.train.grad_clip)
    return t


def _load_data(cfg: Config, runtime: Runtime, full_batch: bool,
               column_major: bool) -> tuple[Stream | None, Prepared, int, Tensor]:
    """(stream or None, prepared splits, training rows over all ranks, training targets)."""
    if not cfg.data.streaming:
        data = prepare(cfg.data, cfg.train.seed, dtype=runtime.dtype, column_major=column_major)
        return None, data, len(data.train[0]), data.train[1]
    if runtime.world_size > 1 and not full_batch:
        raise ConfigError("data.streaming under torchrun needs a full batch (optim.name=lbfgs "
                          "or train.batch_size=null): DDP minibatches need equal steps on "
                          "every rank")
    stream, data = prepare_streaming(cfg.data, cfg.train.seed, dtype=runtime.dtype)
    return stream, data, stream.n_train, torch.tensor(stream.y[stream.train], dtype=runtime.dtype)


def _shard(pair: tuple[Tensor, Tensor], rank: int, world: int,
           equal: bool) -> tuple[Tensor, Tensor]:
    """Rows rank, rank + world, ... With ``equal`` (DDP minibatches, where every rank must take
    the same number of steps) the short shards wrap around to the start, as
    DistributedSampler pads; the full-batch path keeps the exact rows instead."""
    X, y = pair
    n = len(X)
    size = -(-n // world) if equal else len(range(rank, n, world))
    idx = (torch.arange(size) * world + rank) % max(n, 1)
    return X[idx], y[idx]


def _train_model(model: nn.Module, cfg: Config, runtime: Runtime, full_batch: bool) -> nn.Module:
    train_model = torch.compile(model) if cfg.train.compile else model  # same parameters
    if runtime.world_size > 1 and not full_batch:
        from torch.nn.parallel import DistributedDataParallel

        train_model = DistributedDataParallel(
            train_model, device_ids=[runtime.device.index] if runtime.device.type == "cuda"
            else None)
    return train_model
