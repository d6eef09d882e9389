"""Evaluation metrics over a whole split, computed from probabilities.

``binary_metrics`` takes probabilities, never logits: a tensor of logits that happens to lie in
[0, 1] cannot be told apart from probabilities, so we do not guess (torchmetrics would silently
apply a sigmoid to values outside [0, 1]; we raise instead).

``torchmetrics`` is imported inside ``binary_metrics``: importing it costs about 2.5 s on top of
``import torch`` (it pulls in scipy and matplotlib), which the CLI should not pay for
``--help`` or ``config``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

METRIC_NAMES = (
    "log_loss",
    "accuracy",
    "precision",
    "recall",
    "f1",
    "roc_auc",
    "average_precision",
    "brier",
    "ece",
)
THRESHOLD = 0.5  # for the label metrics; predicted label = probs >= THRESHOLD (as model.predict)
ECE_BINS = 15


def _check_inputs(probs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor, int]:
    """Validate; return flat float64 probs, long 0/1 targets (on the probs' device) and the
    number of positive targets."""
    if not isinstance(probs, Tensor) or not isinstance(targets, Tensor):
        raise TypeError("probs and targets must be torch tensors")
    if probs.shape != targets.shape:
        raise ValueError(
            f"probs and targets must have the same shape, got {tuple(probs.shape)} "
            f"and {tuple(targets.shape)}"
        )
    if probs.numel() == 0:
        raise ValueError("cannot compute metrics on an empty split")
    if not probs.is_floating_point():
        raise ValueError(f"probs must be a floating-point tensor, got {probs.dtype}")
    # float64 throughout: exact for any float input, and log loss / AUC sums over large splits
    # stay accurate. One sync point for both checks and the class count.
    p = probs.detach().reshape(-1).to(torch.float64)
    t = targets.detach().reshape(-1).to(device=p.device)
    p_ok = ((p >= 0) & (p <= 1)).all()  # also False for NaN
    t_ok = ((t == 0) | (t == 1)).all()
    p_ok, t_ok, n_pos = torch.stack([p_ok, t_ok, (t == 1).sum()]).tolist()
    if not p_ok:
        raise ValueError(
            "probs must be probabilities in [0, 1] (no NaN); "
            "pass torch.sigmoid(logits) if you have logits"
        )
    if not t_ok:
        raise ValueError("targets must be binary: every value 0 or 1")
    return p, t.long(), n_pos


def binary_metrics(probs: Tensor, targets: Tensor) -> dict[str, float]:
    """Metrics for a whole split from probabilities ``P(y = 1)`` and 0/1 targets.

    Keys (in order): ``log_loss, accuracy, precision, recall, f1, roc_auc, average_precision,
    brier, ece``. Label metrics use ``probs >= 0.5``. ``ece`` is torchmetrics'
    ``BinaryCalibrationError(n_bins=15, norm="l1")``. Works for CPU and CUDA tensors; the values
    come back as Python floats (two host syncs in all: the input checks, then every value).

    Degenerate cases:
      * targets of one class only: ``roc_auc`` and ``average_precision`` are ``nan`` (a ranking
        of positives above negatives is undefined; scikit-learn raises or warns here and
        torchmetrics returns an arbitrary 0 or 1);
      * no positive predictions: ``precision`` is 0, as scikit-learn's ``zero_division=0``;
        likewise ``recall`` with no positive targets and ``f1`` when both are 0.

    Raises ``ValueError`` for empty input, different shapes, probs outside [0, 1] and
    non-binary targets.
    """
    p, t, n_pos = _check_inputs(probs, targets)
    both_classes = 0 < n_pos < t.numel()

    # Lazy: see the module docstring. Ctrl-C must not cut the import half-way (a torch
    # extension left half-registered breaks every later import in the process).
    from logreg_torch.interrupts import critical

    with critical():
        from torchmetrics.functional.classification import (
            binary_accuracy,
            binary_auroc,
            binary_average_precision,
            binary_calibration_error,
            binary_f1_score,
            binary_precision,
            binary_recall,
        )

    # Labels are thresholded here with >= (torchmetrics uses >) so that metrics agree with
    # model.predict at probs == 0.5 exactly. Integer preds are used by torchmetrics as labels.
    labels = (p >= THRESHOLD).long()
    nan = torch.tensor(math.nan, dtype=torch.float64, device=p.device)
    tf = t.to(torch.float64)

    # Same clamp as torch.nn.functional.binary_cross_entropy: log terms >= -100, so a confident
    # wrong prediction costs 100 instead of inf.
    log_p = torch.log(p).clamp(min=-100)
    log_1mp = torch.log1p(-p).clamp(min=-100)
    log_loss = -(tf * log_p + (1 - tf) * log_1mp).mean()

    # Our own checks above are stricter than torchmetrics', so skip its (syncing) validation.
    kw = {"validate_args": False}
    values = {
        "log_loss": log_loss,
        "accuracy": binary_accuracy(labels, t, **kw),
        "precision": binary_precision(labels, t, zero_division=0, **kw),
        "recall": binary_recall(labels, t, zero_division=0, **kw),
        "f1": binary_f1_score(labels, t, zero_division=0, **kw),
        # Undefined with one class (see docstring); skipping the call also avoids its warnings.
        "roc_auc": binary_auroc(p, t, **kw) if both_classes else nan,
        "average_precision": binary_average_precision(p, t, **kw) if both_classes else nan,
        "brier": ((p - tf) ** 2).mean(),
        "ece": binary_calibration_error(p, t, n_bins=ECE_BINS, norm="l1", **kw),
    }
    # One stack + .tolist() = a single device-to-host transfer (one CUDA sync).
    floats = torch.stack([v.to(torch.float64) for v in values.values()]).tolist()
    return dict(zip(values, floats, strict=True))


def format_metrics_table(metrics: dict[str, float], digits: int = 4,
                         note: str | None = None) -> str:
    """An aligned two-column ``metric  value`` table for the terminal, ``note`` below it."""
    rows = [(str(k), f"{float(v):.{digits}f}") for k, v in metrics.items()]
    name_w = max([len("metric")] + [len(k) for k, _ in rows])
    value_w = max([len("value")] + [len(v) for _, v in rows])
    lines = [f"{'metric':<{name_w}}  {'value':>{value_w}}", f"{'-' * name_w}  {'-' * value_w}"]
    lines += [f"{k:<{name_w}}  {v:>{value_w}}" for k, v in rows]
    if note and "loss" in metrics:
        lines.append(note)
    return "\n".join(lines)


def loss_note(pos_weight: float | str | None, label_smoothing: float) -> str | None:
    """Why ``loss`` and ``log_loss`` differ in a table, or None when they are the same
    number: ``loss`` is the training criterion (positives weighted, targets smoothed), and
    ``log_loss`` the plain log loss of the probabilities against the 0/1 labels."""
    parts = []
    if pos_weight is not None and pos_weight != 1:
        parts.append(f"loss.pos_weight={pos_weight} (positives count that much more)")
    if label_smoothing:
        parts.append(f"loss.label_smoothing={label_smoothing:g} (targets "
                     f"{label_smoothing / 2:g} and {1 - label_smoothing / 2:g})")
    if not parts:
        return None
    return (f"note: loss is the training criterion, with {' and '.join(parts)}; log_loss is "
            f"the plain log loss of the probabilities, so the two differ")
