"""Evaluation metrics over a whole split, computed from probabilities.

``binary_metrics`` takes probabilities, never logits: a tensor of logits that happens to lie in
[0, 1] cannot be told apart from probabilities, so we do not guess (torchmetrics would silently
apply a sigmoid to values outside [0, 1]; we raise instead).

The nine metrics are a few tensor ops each, written here rather than taken from torchmetrics:
importing ``torchmetrics.functional.classification`` cost 1.2-1.7 s on top of ``import torch``
on the project's 2-core machine (it pulls in scipy.signal and its audio metrics), for metrics
that take ~2 ms over the 200 rows of ``configs/default.yaml`` (``train --timings``: the
``metrics`` part of ``evaluate``, 20-30 ms a run for its 20 epochs of validation).
``tests/test_metrics.py`` checks each against scikit-learn and torchmetrics (ties, one class,
all-equal scores, large N, CUDA).
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
    brier, ece``. Label metrics use ``probs >= 0.5``. ``roc_auc`` and ``average_precision``
    are scikit-learn's (tied scores form one threshold); ``ece`` is torchmetrics'
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
    tf = t.to(torch.float64)
    n = p.numel()

    # Same clamp as torch.nn.functional.binary_cross_entropy: log terms >= -100, so a confident
    # wrong prediction costs 100 instead of inf.
    log_p = torch.log(p).clamp(min=-100)
    log_1mp = torch.log1p(-p).clamp(min=-100)
    log_loss = -(tf * log_p + (1 - tf) * log_1mp).mean()

    # Labels with >= (torchmetrics thresholds with >): the metrics agree with model.predict at
    # probs == 0.5 exactly.
    predicted = (p >= THRESHOLD).to(torch.float64)
    tp = (predicted * tf).sum()
    fp = predicted.sum() - tp
    fn = n_pos - tp
    if 0 < n_pos < n:
        roc_auc, average_precision = _ranking(p, tf, n_pos)
    else:  # undefined with one class (see the docstring)
        roc_auc = average_precision = p.new_tensor(math.nan)
    values = {
        "log_loss": log_loss,
        "accuracy": (n - fp - fn) / n,
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "roc_auc": roc_auc,
        "average_precision": average_precision,
        "brier": ((p - tf) ** 2).mean(),
        "ece": calibration_error(p, tf, ECE_BINS),
    }
    # One stack + .tolist() = a single device-to-host transfer (one CUDA sync).
    floats = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=p.device)
                          for v in values.values()]).tolist()
    return dict(zip(values, floats, strict=True))


def _ratio(num: Tensor, den: Tensor) -> Tensor:
    """num / den, 0 where den is 0 (scikit-learn's ``zero_division=0``); no host sync."""
    return torch.where(den > 0, num / den.clamp(min=1), torch.zeros_like(num))


def _ranking(p: Tensor, t: Tensor, n_pos: int) -> tuple[Tensor, Tensor]:
    """(ROC AUC, average precision) of float64 scores ``p`` against 0/1 targets ``t`` (both
    classes present), as scikit-learn computes them: one point of the ROC and PR curves per
    distinct score, taken from the highest down, so tied scores move together.

    Sync-free, with no data-dependent shapes: the rows sorted by score, each tie group gets an
    index (a cumulative sum of "a new score starts here"), and the positives and negatives of
    each group are summed into a buffer of n slots (the groups past the last stay empty and add
    nothing). With TP_g and FP_g the counts at and above group g: ROC AUC is the trapezoids
    sum_g FP-step_g * (TP_{g-1} + TP_g) / 2 / (P N); average precision is
    sum_g TP-step_g / P * TP_g / (TP_g + FP_g)."""
    n = p.numel()
    order = torch.argsort(p, descending=True, stable=True)
    p_sorted, t_sorted = p[order], t[order]
    new_group = torch.ones(n, dtype=torch.long, device=p.device)
    new_group[1:] = (p_sorted[1:] != p_sorted[:-1]).long()
    group = torch.cumsum(new_group, 0) - 1
    pos = torch.zeros(n, dtype=torch.float64, device=p.device).index_add_(0, group, t_sorted)
    neg = torch.zeros_like(pos).index_add_(0, group, 1 - t_sorted)
    tps, fps = torch.cumsum(pos, 0), torch.cumsum(neg, 0)
    tps_before = tps - pos
    n_neg = n - n_pos
    roc_auc = (neg * (tps_before + tps)).sum() / (2.0 * n_pos * n_neg)
    # Past the last group tps + fps == n > 0, and pos is 0 there.
    average_precision = (pos * tps / (tps + fps)).sum() / n_pos
    return roc_auc, average_precision


def calibration_error(p: Tensor, t: Tensor, n_bins: int = ECE_BINS) -> Tensor:
    """L1 expected calibration error of float64 probabilities ``p`` against 0/1 targets ``t``,
    as torchmetrics' ``binary_calibration_error``: bins ``linspace(0, 1, n_bins + 1)``,
    right-closed (``bucketize(right=True) - 1``), so that a probability of exactly 1.0 has a
    bin of its own; sum over bins of |mean target - mean probability| * share of rows."""
    edges = torch.linspace(0, 1, n_bins + 1, dtype=p.dtype, device=p.device)
    idx = torch.bucketize(p, edges, right=True) - 1
    count = torch.zeros(n_bins + 1, dtype=p.dtype, device=p.device)
    count.scatter_add_(0, idx, torch.ones_like(p))
    conf = torch.zeros_like(count).scatter_add_(0, idx, p)
    acc = torch.zeros_like(count).scatter_add_(0, idx, t)
    filled = count.clamp(min=1)
    return ((acc / filled - conf / filled).abs() * count).sum() / count.sum()


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
