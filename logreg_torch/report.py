"""The final summary of a run in TensorBoard, written once training is over: hyperparameters
with the run's curves as their metrics, how it ended, the test metrics, and the validation PR
curve and figures (drawn by logreg_torch.figure_worker where ``logreg-torch train`` started
one)."""

from __future__ import annotations

import dataclasses

from torch import Tensor, nn

from logreg_torch.config import FULL_BATCH_SOLVERS, Config
from logreg_torch.objective import Objective
from logreg_torch.predict import predict_proba
from logreg_torch.runs import Ending
from logreg_torch.runtime import Runtime
from logreg_torch.tracking import TensorBoardLogger

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


def start_final(logger: TensorBoardLogger, model: nn.Module, Xv: Tensor, yv: Tensor,
                runtime: Runtime, label_map: dict[str, int] | None = None) -> tuple:
    """The first part of ``log_final``, called once the model is final: the validation
    probabilities and class names, and the figures begun (the worker draws them while the
    run evaluates its test split and writes its last checkpoints)."""
    from logreg_torch.figures import class_names

    names, probs, figures = class_names(label_map), None, None
    if len(Xv):
        probs = predict_proba(model, Xv, runtime)
        figures = _start_figures(logger, probs, yv, names)
    return probs, names, figures


def log_final(logger: TensorBoardLogger, cfg: Config, model: nn.Module, objective: Objective,
              history: list[dict[str, float]], test: dict[str, float] | None, Xv: Tensor,
              yv: Tensor, runtime: Runtime, label_map: dict[str, int] | None = None,
              ending: Ending | None = None, started: tuple | None = None) -> None:
    """The run's hyperparameters (its curves as metrics) and how it ended, the test metrics
    as text, and the validation PR curve and figures, labelled with the class names, once
    training is over. ``started``: what ``start_final`` returned, if it was called."""
    if not history:
        return
    from logreg_torch.tracking import run_hparams

    probs, names, figures = started or start_final(logger, model, Xv, yv, runtime, label_map)
    step = int(history[-1]["epoch"])
    hparams, blank = run_hparams(dataclasses.asdict(cfg)), set()
    if cfg.optim.name in FULL_BATCH_SOLVERS:
        blank.add("optim.lr")  # unused by their line searches: an empty cell, not a number
    # How it ended, as columns beside the settings: the same columns for every run (the tab
    # takes them from one run), empty where a fact does not apply.
    hparams["ending.kind"] = ending.kind if ending is not None else "unknown"
    for key in ("iterations", "grad_max"):
        value = None if ending is None else getattr(ending, key)
        hparams[f"ending.{key}"] = 0.0 if value is None else float(value)
        if value is None:
            blank.add(f"ending.{key}")
    logger.log_hparams(hparams, HPARAM_METRICS, descriptions=METRIC_DESCRIPTIONS, blank=blank)
    if test:
        from logreg_torch.metrics import format_metrics_table

        logger.log_text("test_metrics", "```\n" + format_metrics_table(test) + "\n```")
    if probs is not None:
        logger.log_pr_curve("val/pr_curve", probs, yv, step, positive=names[1])
    if figures is not None:
        _log_figures(logger, figures, step)


def _start_figures(logger: TensorBoardLogger, probs: Tensor, targets: Tensor,
                   names: tuple[str, str]):
    """What ``_log_figures`` needs: the data as numpy, and the figure worker (started by
    ``logreg-torch train``, logreg_torch.figure_worker) already given it, when there is one;
    None when no figures are drawn (matplotlib missing, or a rank that writes nothing)."""
    from logreg_torch import figure_worker
    from logreg_torch.figures import _to_numpy
    from logreg_torch.tracking import figures_available

    worker = figure_worker.take()
    if not (logger.enabled and figures_available()):
        if worker is not None:
            worker.close()
        return None
    with logger.timed("figures"):
        p, t = _to_numpy(probs), _to_numpy(targets)
        if worker is not None and not worker.send(p, t, names):
            worker = None
    return p, t, names, worker


def _log_figures(logger: TensorBoardLogger, figures, step: int) -> None:
    """The three validation figures, drawn once at the end of the run (by the worker, else
    here); waiting for them and drawing count as the logger's ``figures`` seconds."""
    from logreg_torch.figures import FIGURE_TAGS, draw_png

    p, t, names, worker = figures
    with logger.timed("figures"):
        received = worker.receive() if worker is not None else iter(())
        for tag in FIGURE_TAGS:
            sent = next(received, None)
            # No worker, or it failed: the same figure, drawn here.
            height, width, png = (sent[1:] if sent is not None and sent[0] == tag
                                  else draw_png(tag, p, t, names))
            logger.log_png(tag, png, height, width, step)
        if worker is not None:
            worker.close()
