"""Log loss worked out by hand, for the terminal (``logreg-torch explain``).

The story: a clothing company wants to predict whether a customer buys a jacket (class 1) or a
cardigan (class 0); the model gives each customer p, its probability of "jacket". Log loss takes
three steps: the corrected probability (the probability the model gave to what the customer
really bought), its natural log, and the negative mean of those logs. The walk-through then
checks the hand result against ``logreg_torch.binary_cross_entropy`` and ``torch.nn.BCELoss``.

Pure functions only; the CLI parses ``--probs`` / ``--labels`` with ``parse_numbers``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch

from logreg_torch.losses import binary_cross_entropy

__all__ = ["DEFAULT_CUSTOMERS", "Customer", "explain", "explain_numbers", "parse_numbers"]

# torch clamps each log term of BCE at -100, so p = 0 or 1 gives a finite loss.
LOG_CLAMP = -100.0


class Customer(NamedTuple):
    id: int
    target: int  # 1 = bought a jacket, 0 = bought a cardigan
    prob: float  # the model's predicted probability of "jacket"


# Customers 5 and 6 are the two worked examples of the article: a cardigan buyer given
# p = 0.1 (corrected probability 0.9) and a jacket buyer given p = 0.94. Customers 7 and 8
# are misses, so the table shows what a wrong prediction costs.
DEFAULT_CUSTOMERS: tuple[Customer, ...] = (
    Customer(1, 1, 0.82),
    Customer(2, 0, 0.35),
    Customer(3, 1, 0.67),
    Customer(4, 0, 0.22),
    Customer(5, 0, 0.10),
    Customer(6, 1, 0.94),
    Customer(7, 1, 0.45),
    Customer(8, 0, 0.60),
)

_CLASS_NAMES = {1: "jacket", 0: "cardigan"}


def parse_numbers(text: str, name: str | None = None) -> list[float]:
    """``"0.94, 0.1,1"`` -> ``[0.94, 0.1, 1.0]``; ValueError naming the bad item.

    ``name`` (e.g. ``"--probs"``), if given, starts the error message.
    """
    where = f"{name}: " if name else ""
    if not text.strip():
        raise ValueError(f"{where}no numbers given; expected a comma-separated list like 0.9,0.2")
    values = []
    for i, item in enumerate(text.split(","), start=1):
        item = item.strip()
        if not item:
            raise ValueError(f"{where}item {i} is empty in {text!r}")
        try:
            value = float(item)
        except ValueError:
            raise ValueError(f"{where}item {i} ({item!r}) is not a number") from None
        if not math.isfinite(value):
            raise ValueError(f"{where}item {i} ({item!r}) is not a finite number")
        values.append(value)
    return values


def _show(value: Any) -> str:
    # 2.0 parsed from "--labels 1,2" reads back as the 2 the user typed.
    return f"{value:g}" if isinstance(value, float) else repr(value)


def _check_inputs(probs: Sequence[Any] | None, labels: Sequence[Any] | None,
                  ) -> tuple[list[float], list[int]]:
    if probs is None and labels is None:
        return [c.prob for c in DEFAULT_CUSTOMERS], [c.target for c in DEFAULT_CUSTOMERS]
    if probs is None or labels is None:
        missing = "probs" if probs is None else "labels"
        raise ValueError(f"give both probs and labels, or neither (the {missing} are missing)")
    if isinstance(probs, str) or isinstance(labels, str):
        raise ValueError("probs and labels must be sequences of numbers; parse text with "
                         "parse_numbers first")
    if len(probs) != len(labels):
        raise ValueError(f"got {len(probs)} probs but {len(labels)} labels; "
                         "give one label per probability")
    if len(probs) == 0:
        raise ValueError("give at least one customer (probs and labels are empty)")
    out_probs = []
    for i, p in enumerate(probs, start=1):
        try:
            value = float(p)
        except (TypeError, ValueError):
            raise ValueError(f"probability {_show(p)} of customer {i} is not a number") from None
        if not 0.0 <= value <= 1.0:  # NaN fails too
            raise ValueError(f"probability {_show(p)} of customer {i} must be between 0 and 1")
        out_probs.append(value)
    out_labels = []
    for i, y in enumerate(labels, start=1):
        try:
            value = float(y.strip() if isinstance(y, str) else y)
        except (TypeError, ValueError):
            value = math.nan
        if value not in (0.0, 1.0):
            raise ValueError(f"label {_show(y)} of customer {i} must be 0 (cardigan) or 1 (jacket)")
        out_labels.append(int(value))
    return out_probs, out_labels


def explain_numbers(probs: Sequence[float] | None = None,
                    labels: Sequence[int | float] | None = None) -> dict[str, Any]:
    """The columns of the walk-through and the loss computed three ways, all float64.

    Keys: ``ids``, ``labels``, ``probs``, ``corrected`` (step 1), ``logs`` (step 2, may hold
    -inf), ``clamped_logs`` (step 2 clamped at -100 as torch does), ``clamped`` (whether any log
    was), ``by_hand`` (step 3), ``binary_cross_entropy`` (ours) and ``torch_bce_loss``
    (``torch.nn.BCELoss``). With neither argument given, uses ``DEFAULT_CUSTOMERS``.
    """
    probs, labels = _check_inputs(probs, labels)
    corrected = [p if y == 1 else 1.0 - p for p, y in zip(probs, labels, strict=True)]
    logs = [math.log(c) if c > 0 else -math.inf for c in corrected]
    clamped_logs = [max(v, LOG_CLAMP) for v in logs]
    by_hand = -math.fsum(clamped_logs) / len(clamped_logs)

    input = torch.tensor(probs, dtype=torch.float64)
    target = torch.tensor(labels, dtype=torch.float64)
    return {
        "ids": list(range(1, len(probs) + 1)),
        "labels": labels,
        "probs": probs,
        "corrected": corrected,
        "logs": logs,
        "clamped_logs": clamped_logs,
        "clamped": any(v < LOG_CLAMP for v in logs),
        "by_hand": by_hand,
        "binary_cross_entropy": binary_cross_entropy(input, target).item(),
        "torch_bce_loss": torch.nn.BCELoss()(input, target).item(),
    }


def _fmt_log(value: float) -> str:
    if value == -math.inf:
        return f"-inf (counts as {LOG_CLAMP:g})"
    return f"{value:.6f}"


def explain(probs: Sequence[float] | None = None,
            labels: Sequence[int | float] | None = None) -> str:
    """A readable walk-through of log loss on ``probs`` (p of class 1) and ``labels`` (0 or 1).

    With neither given, uses the jacket/cardigan customers of ``DEFAULT_CUSTOMERS``. Raises
    ValueError with one clear line for bad input.
    """
    n = explain_numbers(probs, labels)
    rows = list(zip(n["ids"], n["labels"], n["probs"], n["corrected"], n["logs"], strict=True))
    count = len(rows)
    lines = [
        "Log loss, step by step",
        "",
        "Does a customer buy a jacket (class 1) or a cardigan (class 0)? For each customer the",
        'model gives p, its probability of "jacket".',
        "",
        f"{'ID':>4}  {'bought':<8}  {'true class':>10}  {'p(jacket)':>10}",
    ]
    lines += [f"{i:>4}  {_CLASS_NAMES[y]:<8}  {y:>10}  {p:>10.4g}" for i, y, p, _, _ in rows]
    lines += [
        "",
        "Step 1  corrected probability = the probability the model gave to what the customer",
        "        really bought: p for a jacket (class 1), 1 - p for a cardigan (class 0).",
        "Step 2  natural log of the corrected probability. It is never above 0, and it falls",
        "        steeply as the corrected probability nears 0.",
        "",
        f"{'ID':>4}  {'true class':>10}  {'step 1: corrected':<24}  step 2: ln(corrected)",
    ]
    for i, y, p, c, log in rows:
        step1 = f"p = {c:.6g}" if y == 1 else f"1 - p = 1 - {p:.6g} = {c:.6g}"
        lines.append(f"{i:>4}  {y:>10}  {step1:<24}  {_fmt_log(log):>21}")
    total = math.fsum(n["clamped_logs"])
    good, bad = -math.log(0.94), -math.log(0.01)
    lines += [
        "",
        "Step 3  log loss = minus the mean of the logs (the minus makes lower = better):",
        f"        -({total:.6f}) / {count} = {n['by_hand']:.6f}",
    ]
    if n["clamped"]:
        lines += [
            "",
            "        A corrected probability of exactly 0 has ln 0 = -inf, which would make",
            f"        the loss infinite. torch clamps every log at {LOG_CLAMP:g}; the sum above",
            "        does the same, so the loss stays finite.",
        ]
    lines += [
        "",
        "All together: log loss = -(1/N) * sum of [y ln p + (1 - y) ln(1 - p)].",
        "",
        "The same numbers, three ways (float64):",
        f"  by hand (steps 1-3)                 {n['by_hand']:.12f}",
        f"  logreg_torch.binary_cross_entropy   {n['binary_cross_entropy']:.12f}",
        f"  torch.nn.BCELoss                    {n['torch_bce_loss']:.12f}",
        "",
        "A confident mistake is punished without bound: a jacket buyer given p = 0.94 costs",
        f"-ln(0.94) = {good:.4f}; one given p = 0.01 costs -ln(0.01) = {bad:.4f}, "
        f"{bad / good:.0f} times as much.",
        "As p goes to 0 the cost goes to infinity (torch clamps it at 100).",
    ]
    return "\n".join(lines)
