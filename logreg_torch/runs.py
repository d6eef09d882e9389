"""A run on disk and what it reports: the run folder, the checkpoint state and its saving, the
final TensorBoard summary, and ``FitResult``."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from logreg_torch.checkpoint import CheckpointError, save_checkpoint
from logreg_torch.config import Config
from logreg_torch.data import Prepared
from logreg_torch.objective import Objective
from logreg_torch.predict import predict_proba
from logreg_torch.runtime import Runtime, rng_state
from logreg_torch.tracking import TensorBoardLogger


class TrainingError(RuntimeError):
    """Training cannot go on (a NaN/inf loss, say); one line for people."""


@dataclass
class FitResult:
    model: nn.Module
    history: list[dict[str, float]]  # one dict per epoch: epoch, train/loss, val/loss, val/..., lr
    best: dict[str, float]  # the history entry of the best epoch (lowest val loss)
    test: dict[str, float] | None  # metrics of the final model on the test split
    run_dir: Path
    stopped_early: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def new_run_dir(cfg: Config) -> Path:
    """``runs/<name>-<timestamp>``, made with an exclusive mkdir so that two runs started in the
    same second get different folders (a ``-2``, ``-3`` suffix)."""
    if cfg.log.run_dir:
        path = Path(cfg.log.run_dir)
        path.mkdir(parents=True, exist_ok=True)
        return path
    base = Path("runs") / f"{cfg.log.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    base.parent.mkdir(parents=True, exist_ok=True)
    for i in range(1, 10_000):
        path = base if i == 1 else base.with_name(f"{base.name}-{i}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise TrainingError(f"could not create a run folder next to {base}")


# ----------------------------------------------------------------------------- checkpoint state


@dataclass
class Progress:
    """What a run has done so far; it goes into every checkpoint and comes back on resume."""

    epoch: int = 0  # epochs finished when this run started (0, or the resumed epoch)
    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    best_loss: float = math.inf
    bad_epochs: int = 0  # epochs since the monitored loss last improved

    @classmethod
    def from_checkpoint(cls, state: dict) -> Progress:
        return cls(state["epoch"], state["step"], list(state.get("history", [])),
                   state.get("best_loss", math.inf), state.get("bad_epochs", 0))

    def count_step(self) -> None:
        self.step += 1

    def update(self, monitored: float, min_delta: float) -> bool:
        """Track the best monitored loss; True when this epoch improved on it."""
        improved = monitored < self.best_loss - min_delta
        if improved:
            self.best_loss, self.bad_epochs = monitored, 0
        else:
            self.bad_epochs += 1
        return improved


def model_args(cfg: Config, in_features: int) -> dict[str, Any]:
    return {"name": cfg.model.name, "in_features": in_features, "hidden": list(cfg.model.hidden),
            "dropout": cfg.model.dropout, "bias": cfg.model.bias}


def checkpoint_state(cfg: Config, data: Prepared, model: nn.Module,
                     optimizer: torch.optim.Optimizer, scheduler, scaler, progress: Progress,
                     epoch: int) -> dict[str, Any]:
    """The one dict a checkpoint holds: weights, optimizer, RNG, config, preprocessing, progress."""
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "scaler": None if scaler is None else scaler.state_dict(),
        "epoch": epoch,
        "step": progress.step,
        "rng": rng_state(),
        "config": dataclasses.asdict(cfg),
        "model_args": model_args(cfg, len(data.feature_names)),
        "preprocessing": data.preprocessing,
        "label_map": data.label_map,
        "feature_names": data.feature_names,
        "history": progress.history,
        "best_loss": progress.best_loss,
        "bad_epochs": progress.bad_epochs,
    }


def check_resume_fits(state: dict, cfg: Config, in_features: int) -> None:
    args = state["model_args"]
    if args["in_features"] != in_features or args["name"] != cfg.model.name:
        raise CheckpointError(
            f"cannot resume from {cfg.train.resume}: it holds a {args['name']} model with "
            f"{args['in_features']} features, the config builds {cfg.model.name} with "
            f"{in_features}")


@dataclass
class Checkpoints:
    """Writes checkpoints into the run folder (main process only) and remembers the last good
    one, for the messages of a run that has to stop."""

    run_dir: Path
    is_main: bool
    last_good: Path | None  # until this run writes last.pt, the checkpoint it resumed from
    saved_epoch: int | None  # the epoch run_dir/last.pt holds, when known

    def save(self, name: str, epoch: int, state: Callable[[], dict[str, Any]]) -> None:
        if self.is_main:
            try:
                save_checkpoint(state(), self.run_dir / name)
            except CheckpointError as e:  # a full disk, say: going on would lose more epochs
                good = self.last_good or "none was written yet"
                raise TrainingError(f"{e}; training stopped at epoch {epoch}; last good "
                                    f"checkpoint: {good}") from None
        if name == "last.pt":
            self.saved_epoch = epoch
            self.last_good = self.run_dir / "last.pt"


# ----------------------------------------------------------------------------- final report


def log_final(logger: TensorBoardLogger, cfg: Config, model: nn.Module, objective: Objective,
              history: list[dict[str, float]], test: dict[str, float] | None, Xv: Tensor,
              yv: Tensor, runtime: Runtime) -> None:
    """The run's hyperparameters with its final metrics, and the validation PR curve and
    figures, once training is over."""
    if not history:
        return
    final = {k: v for k, v in history[-1].items() if k.startswith(("val/", "train/"))}
    if test:
        final.update({f"test/{k}": v for k, v in test.items()})
    final = {k: v for k, v in final.items() if math.isfinite(v)}
    logger.log_hparams(dataclasses.asdict(cfg), final)
    if len(Xv):
        probs = predict_proba(model, Xv, runtime)
        logger.log_pr_curve("val/pr_curve", probs, yv, int(history[-1]["epoch"]))
        from logreg_torch.tracking import (
            figures_available,
            probability_histogram_figure,
            reliability_figure,
        )

        if figures_available():
            step = int(history[-1]["epoch"])
            logger.log_figure("val/reliability", reliability_figure(probs, yv), step)
            logger.log_figure("val/probability_histogram",
                              probability_histogram_figure(probs, yv), step)
