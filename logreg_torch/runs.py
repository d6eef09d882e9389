"""A run on disk and what it reports: the run folder, the checkpoint state and its saving, how
it ended, and ``FitResult`` (its final TensorBoard summary: logreg_torch.report)."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from logreg_torch.checkpoint import (
    BackgroundCommits,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
    write_error,
)
from logreg_torch.config import Config, ConfigError
from logreg_torch.data import Prepared
from logreg_torch.runtime import rng_state


class TrainingError(RuntimeError):
    """Training cannot go on (a NaN/inf loss, say); one line for people."""


@dataclass
class Ending:
    """How a run ended, in one line (``message``) and as facts. ``kind`` is "converged",
    "not_converged" (a full-batch solver out of budget or at its rounding floor),
    "early_stopping" or "finished" (every epoch ran); in a best.pt that holds an earlier
    iterate of a solver than the last (chosen by validation loss), "earlier_iterate"."""

    kind: str
    message: str
    epochs: int  # epochs this run finished
    iterations: int | None = None  # full-batch solvers: iterations in all
    grad_max: float | None = None  # full-batch solvers: max|grad| at the end
    tol: float | None = None
    best_epoch: int | None = None  # the epoch best.pt holds
    finish_from: int | None = None  # the iteration where a stalled solve was handed over
    # The epoch whose weights the checkpoint holding this ending has (None: the final ones)
    holds_epoch: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def stamp(self, state: dict[str, Any], solver: bool) -> dict[str, Any]:
        """The ending to write into the checkpoint ``state``: the run's own when it holds the
        final weights; for an earlier epoch's (best.pt chosen by validation loss) the facts
        of those weights, with the run's ending after them. ``solver``: a full-batch solver's
        run, whose records hold the iteration (``step``) and max|grad| (``grad_norm``)."""
        epoch = int(state["epoch"])
        if epoch == self.epochs:
            return self.as_dict()
        record = state["history"][-1] if state.get("history") else {}
        if not solver or "grad_norm" not in record:
            return dataclasses.replace(self, holds_epoch=epoch).as_dict()
        n, g = int(record["step"]), float(record["grad_norm"])
        message = (f"epoch {epoch}'s iterate, the lowest val/loss: max|grad| {g:.1e} after {n} "
                   f"iteration{'' if n == 1 else 's'}, not the solve's last point (last.pt); "
                   f"the run: {self.message}")
        return dataclasses.replace(self, kind="earlier_iterate", message=message, iterations=n,
                                   grad_max=g, finish_from=None, holds_epoch=epoch).as_dict()


def solver_ending(report, tol: float, epochs: int, handover: tuple[int, float, str] | None,
                  precision: str) -> Ending:
    """The ending of a full-batch solver from its last ``SolveReport`` (logreg_torch.newton);
    ``handover`` = (iterations, max|grad|, what finished) when rounding stalled the solver and
    a float64 finish took over (logreg_torch.fullbatch)."""
    n, g = report.n_iter, report.grad_max
    its = "iteration" if n == 1 else "iterations"
    dtype = "float64" if precision == "fp64" else "float32"
    note = ""
    if handover is not None:
        k = n - handover[0]
        note = (f"; {dtype} stalled at max|grad| {handover[1]:.1e} after {handover[0]}, then "
                f"{k} {handover[2]}{'' if k == 1 else 's'}")
    facts = dict(epochs=epochs, iterations=n, grad_max=g, tol=tol,
                 finish_from=None if handover is None else handover[0])
    if report.converged:
        return Ending("converged", f"converged after {n} {its} (max|grad| {g:.1e} <= tol "
                                   f"{tol:.0e}{note})", **facts)
    if report.reason == "stalled":
        dtype = "float64" if handover is not None else dtype
        advice = ("tol is below what float64 resolves here; raise optim.tol" if dtype == "float64"
                  else "use train.precision=fp64 or optim.fp64_finish=true")
        why = f"stopped at the {dtype} floor (no step lowers the objective)"
    else:
        advice = "increase optim.max_iter" + ("" if precision == "fp64" else " / use fp64")
        why = "optim.max_iter spent"
    return Ending("not_converged", f"did not converge: {why}, max|grad| {g:.1e} > tol {tol:.0e} "
                                   f"after {n} {its}{note}; {advice}", **facts)


def epochs_ending(epochs: int, planned: int, best_epoch: int | None, patience: int | None,
                  monitored: str) -> Ending:
    """The ending of a run that went epoch by epoch: early stopping, or all epochs done."""
    if epochs < planned and patience is not None:
        return Ending("early_stopping", f"early stopping: no {monitored} improvement for "
                                        f"{patience} epochs; best epoch {best_epoch} (best.pt)",
                      epochs=epochs, best_epoch=best_epoch)
    unit = "epoch" if epochs == 1 else "epochs"
    return Ending("finished", f"finished {epochs} {unit}; best epoch {best_epoch} (best.pt)",
                  epochs=epochs, best_epoch=best_epoch)


def run_ending(cfg: Config, progress: Progress, solve, has_val: bool, stopped_early: bool,
               best: dict) -> Ending:
    """How a fit ended: a full-batch solver's ending (``solve``, a fullbatch.SolveState, or
    None for epoch-based optimizers) unless early stopping came first; else the epochs'."""
    epochs = int(progress.history[-1]["epoch"]) if progress.history else progress.epoch
    patience = cfg.train.early_stopping_patience
    early = stopped_early and patience is not None and progress.bad_epochs >= patience
    if solve is not None and solve.report is not None and (solve.done(cfg.optim.max_iter)
                                                           or not early):
        ending = solver_ending(solve.report, cfg.optim.tol, epochs, solve.handover,
                               cfg.train.precision)
    else:
        best_epoch = int(best["epoch"]) if best else None
        ending = epochs_ending(epochs, cfg.train.epochs, best_epoch, patience if early else None,
                               "val/loss" if has_val else "train/loss")
    return dataclasses.replace(ending, holds_epoch=epochs)  # the model in hand: the last


@dataclass
class FitResult:
    model: nn.Module
    history: list[dict[str, float]]  # one dict per epoch: epoch, train/loss, val/loss, val/..., lr
    best: dict[str, float]  # the history entry of the best epoch (lowest val loss)
    test: dict[str, float] | None  # metrics of the final model on the test split
    run_dir: Path
    stopped_early: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    ending: Ending | None = None  # how the run ended (also in the checkpoints and TensorBoard)


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


def stage_parts(timings: dict[str, float], evaluate: dict[str, float],
                logging: dict[str, float]) -> dict[str, dict[str, float]]:
    """--timings' finer entries: the parts of the evaluate and logging stages, each with an
    ``other`` part (what no named part measured), so that they add up to the stage."""
    parts = {"evaluate": {"predict": evaluate.get("predict", 0.0),
                          "metrics": evaluate.get("metrics", 0.0)},
             "logging": dict(logging)}
    for stage, named in parts.items():
        named["other"] = timings[stage] - sum(named.values())
    return parts


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
                     optimizer: torch.optim.Optimizer | None, scheduler, scaler,
                     progress: Progress, epoch: int,
                     ending: dict[str, Any] | None = None) -> dict[str, Any]:
    """The one dict a checkpoint holds: weights, optimizer, RNG, config, preprocessing, progress."""
    return {
        "model": model.state_dict(),
        "optimizer": None if optimizer is None else optimizer.state_dict(),
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
        "ending": ending,  # set in the checkpoints once the run has ended
    }


def check_resume_fits(state: dict, cfg: Config, feature_names: list[str]) -> None:
    """The data read now has the columns the checkpoint's model was trained on (the config
    may name the same file, and the file have changed)."""
    args, saved = state["model_args"], list(state.get("feature_names") or [])
    if args["in_features"] != len(feature_names) or args["name"] != cfg.model.name:
        raise CheckpointError(
            f"cannot resume from {cfg.train.resume}: it holds a {args['name']} model with "
            f"{args['in_features']} features, the config builds {cfg.model.name} with "
            f"{len(feature_names)}")
    if saved and saved != list(feature_names):
        i = next(i for i, (a, b) in enumerate(zip(saved, feature_names, strict=True)) if a != b)
        raise CheckpointError(
            f"cannot resume from {cfg.train.resume}: the data's column {i} is "
            f"{feature_names[i]!r}, the run was trained with {saved[i]!r} there")


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
    seconds: float = 0.0  # spent saving and copying states: --timings' "checkpoints"
    # Each file's fsync and rename run while the next epoch trains; a save first waits for
    # the ones before, so that the files on disk at any moment are what they were before.
    commits: BackgroundCommits = field(default_factory=BackgroundCommits)

    def keep_unsaved(self, epoch: int, state: Callable[[], dict[str, Any]]) -> None:
        """After an epoch (or before the first): copy its state unless last.pt holds it."""
        if self.is_main:
            started = time.perf_counter()
            self.pending = None if self.saved_epoch == epoch else copy.deepcopy(state())
            self.seconds += time.perf_counter() - started

    def save(self, name: str, epoch: int, state: Callable[[], dict[str, Any]]) -> None:
        self.flush()  # so that a kill or a failure finds every earlier file in place
        started = time.perf_counter()
        if self.is_main:
            try:
                save_checkpoint(state(), self.run_dir / name, self.commits,
                                info=(self.run_dir / name, epoch, self.last_good))
            except CheckpointError as e:  # a full disk, say: going on would lose more epochs
                raise _stopped(e, epoch, self.last_good) from None
        if name == "last.pt":
            self.saved_epoch = epoch
            self.last_good = self.run_dir / "last.pt"
        self.seconds += time.perf_counter() - started

    def flush(self) -> None:
        """Wait until every checkpoint saved is in place; a write that failed meanwhile
        stops the run as a failed ``save`` does."""
        started = time.perf_counter()
        failed = self.commits.wait()
        self.seconds += time.perf_counter() - started
        if failed is not None:
            error, (path, epoch, last_good) = failed
            self.commits.failed = None  # reported once
            raise _stopped(write_error(error, path), epoch, last_good)

    def add_ending(self, name: str, ending: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        """Write how the run ended, as ``ending(state)`` tells it for the weights that
        checkpoint holds, into a checkpoint written earlier (best.pt)."""
        self.flush()
        started = time.perf_counter()
        path = self.run_dir / name
        if self.is_main and path.exists():
            state = load_checkpoint(path)
            state["ending"] = ending(state)
            save_checkpoint(state, path, self.commits,
                            info=(path, state["epoch"], self.last_good))
        self.seconds += time.perf_counter() - started

    def settle(self) -> None:
        """``flush`` on the way out of a run that is already failing or interrupted: its
        own error is the one to report."""
        with contextlib.suppress(TrainingError):
            self.flush()


def _stopped(error: CheckpointError, epoch: int, last_good: Path | None) -> TrainingError:
    good = last_good or "none was written yet"
    return TrainingError(f"{error}; training stopped at epoch {epoch}; last good checkpoint: "
                         f"{good}")


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
