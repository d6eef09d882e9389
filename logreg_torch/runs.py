"""A run on disk and what it reports: the run folder, the checkpoint state and its saving, the
final TensorBoard summary, and ``FitResult``."""

from __future__ import annotations

import copy
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
from logreg_torch.config import Config, ConfigError
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
    first_loss: float | None = None  # the untrained model's loss: the divergence yardstick

    @classmethod
    def from_checkpoint(cls, state: dict) -> Progress:
        return cls(state["epoch"], state["step"], list(state.get("history", [])),
                   state.get("best_loss", math.inf), state.get("bad_epochs", 0),
                   state.get("first_loss"))

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
        "first_loss": progress.first_loss,
    }


def check_resume_fits(state: dict, cfg: Config, in_features: int) -> None:
    args = state["model_args"]
    if args["in_features"] != in_features or args["name"] != cfg.model.name:
        raise CheckpointError(
            f"cannot resume from {cfg.train.resume}: it holds a {args['name']} model with "
            f"{args['in_features']} features, the config builds {cfg.model.name} with "
            f"{in_features}")


def resume_line(run_dir: Path) -> str:
    """The command that goes on with the run in ``run_dir``."""
    return (f"resume with: logreg-torch train {run_dir / 'config.yaml'} "
            f"train.resume={run_dir / 'last.pt'}")


def check_resume_name(cfg: Config, state: dict) -> None:
    """A resume continues its run, in its folder, under its name: another ``log.name`` is a
    mistake (say so) rather than a rename that would not happen."""
    name = state.get("config", {}).get("log", {}).get("name")
    if name is not None and cfg.log.name != name:
        raise ConfigError(
            f"log.name={cfg.log.name!r} with train.resume: a resumed run continues run "
            f"{name!r} in its own folder ({Path(cfg.train.resume).parent}); drop log.name, "
            f"or start a new run without train.resume")


@dataclass
class Checkpoints:
    """Writes checkpoints into the run folder (main process only) and remembers the last good
    one, for the messages of a run that has to stop."""

    run_dir: Path
    is_main: bool
    last_good: Path | None  # until this run writes last.pt, the checkpoint it resumed from
    saved_epoch: int | None  # the epoch run_dir/last.pt holds, when known
    # A copy of the last finished epoch's state while last.pt holds an older one
    # (train.checkpoint_every > 1): what Ctrl-C writes, rather than a model mid-epoch.
    pending: dict[str, Any] | None = None

    def keep_unsaved(self, epoch: int, state: Callable[[], dict[str, Any]]) -> None:
        """After an epoch (or before the first): copy its state unless last.pt holds it."""
        if self.is_main:
            self.pending = None if self.saved_epoch == epoch else copy.deepcopy(state())

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


# ----------------------------------------------------------------------------- divergence

# A run has diverged when its training loss or its parameters stop being finite, or when the
# loss has grown past DIVERGENCE_FACTOR times the loss of the model it started from (on the
# validation split, else the training rows): no run worth going on with climbs that far.
DIVERGENCE_FACTOR = 1e4


def divergence(train_loss: float, model: nn.Module, first_loss: float | None) -> str | None:
    """Why the run has diverged after an epoch with this training loss, or None."""
    if not math.isfinite(train_loss):
        return f"the training loss is {train_loss}"
    if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
        return "the parameters hold inf or NaN"
    if first_loss is not None and train_loss > DIVERGENCE_FACTOR * first_loss:
        return (f"the training loss {train_loss:.3g} is over {DIVERGENCE_FACTOR:g} times the "
                f"initial {first_loss:.4g}")
    return None


def diverged(why: str, epoch: int, step: int, last_good: Path | None,
             lr: float) -> TrainingError:
    """The one line a diverged run ends with; the last good checkpoint is left as it was."""
    where = f"{last_good}" if last_good else "none was written yet"
    return TrainingError(
        f"training diverged at epoch {epoch} (step {step}): {why}; last good checkpoint: "
        f"{where}; try a smaller optim.lr (now {lr:g})")


# ----------------------------------------------------------------------------- final report


# History keys -> TensorBoard tags. Time Series sorts groups and the cards in each by name:
# so it opens on train/loss (then train/lr), then val/..., and last the weights group: the
# gradient norm beside the weight histograms.
TAGS = {"lr": "train/lr", "grad_norm": "weights/grad_norm"}
# The HParams tab's metric columns (it ticks the first five), the same for every run.
HPARAM_METRICS = ("val/loss", "val/accuracy", "val/roc_auc", "val/log_loss", "train/loss",
                  "val/precision", "val/recall", "val/f1", "val/average_precision",
                  "val/brier", "val/ece")
METRIC_DESCRIPTIONS = {
    "val/loss": "the training criterion on the validation split (pos_weight and label "
                "smoothing included, no l1/l2 penalty)",
    "val/log_loss": "plain log loss of the probabilities against the true 0/1 labels",
    "train/loss": "mean training criterion over the last epoch (no l1/l2 penalty)",
}


def log_final(logger: TensorBoardLogger, cfg: Config, model: nn.Module, objective: Objective,
              history: list[dict[str, float]], test: dict[str, float] | None, Xv: Tensor,
              yv: Tensor, runtime: Runtime, label_map: dict[str, int] | None = None) -> None:
    """The run's hyperparameters (its curves as metrics), the test metrics as text, and the
    validation PR curve and figures, labelled with the class names, once training is over."""
    if not history:
        return
    from logreg_torch.tracking import class_names, run_hparams

    logger.log_hparams(run_hparams(dataclasses.asdict(cfg)), HPARAM_METRICS,
                       descriptions=METRIC_DESCRIPTIONS)
    if test:
        from logreg_torch.metrics import format_metrics_table

        logger.log_text("test_metrics", "```\n" + format_metrics_table(test) + "\n```")
    if len(Xv):
        names = class_names(label_map)
        step = int(history[-1]["epoch"])
        probs = predict_proba(model, Xv, runtime)
        logger.log_pr_curve("val/pr_curve", probs, yv, step, positive=names[1])
        from logreg_torch.tracking import (
            figures_available,
            pr_curve_figure,
            probability_histogram_figure,
            reliability_figure,
        )

        if figures_available():
            logger.log_figure("val/reliability", reliability_figure(probs, yv, names=names), step)
            logger.log_figure("val/probability_histogram",
                              probability_histogram_figure(probs, yv, names), step)
            logger.log_figure("val/precision_recall", pr_curve_figure(probs, yv, names), step)
