"""Two labels of any form to 0/1: the default positive label and matching a given one."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from logreg_torch.data.table import DataError


def _as_number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def default_positive_label(labels: Iterable[str]) -> str:
    """The label mapped to 1 when data.positive_label is unset.

    true/false (any case) -> true; two numbers -> the larger (so 0/1 -> 1, -1/1 -> 1);
    otherwise the label that sorts last, as scikit-learn's LabelEncoder does (classes_[1] is
    the positive class): "jacket" > "cardigan", so jacket = 1.
    """
    low, high = sorted(labels)
    if {low.lower(), high.lower()} == {"false", "true"}:
        return low if low.lower() == "true" else high
    a, b = _as_number(low), _as_number(high)
    if a is not None and b is not None:
        return low if a > b else high
    return high


def _find_label(value: object, labels: Sequence[str]) -> str | None:
    """Match a value to a label: exactly, then as a number ("1.0" is "1"), then ignoring case."""
    text = str(value).strip()
    if text in labels:
        return text
    number = _as_number(text)
    hits = [lab for lab in labels if number is not None and _as_number(lab) == number]
    hits = hits or [lab for lab in labels if lab.lower() == text.lower()]
    return hits[0] if len(hits) == 1 else None


def _label_text(value: object) -> str:
    # npy labels are numbers; show 0.0 as "0" so label maps read the same as for CSV files.
    if isinstance(value, (str, np.str_, bool, np.bool_)):
        return str(value)
    number = float(value)
    return str(int(number)) if number.is_integer() else repr(number)


def _encode_labels(y_raw: np.ndarray, positive_label: str | None, what: str,
                   path: str | Path | None) -> tuple[np.ndarray, dict[str, int]]:
    values = np.unique(y_raw)
    names = [_label_text(v) for v in values]
    if len(values) == 1:
        raise DataError(f"{what} holds a single class {names[0]!r}; need two", path)
    if len(values) != 2:
        shown = ", ".join(repr(n) for n in names[:5]) + (", ..." if len(names) > 5 else "")
        raise DataError(f"{what} must hold exactly two distinct values, found {len(names)}: "
                        f"{shown}", path)
    if positive_label is None:
        positive = default_positive_label(names)
    else:
        positive = _find_label(positive_label, names)
        if positive is None:
            raise DataError(f"data.positive_label={positive_label!r} is not a label of {what}; "
                            f"the labels are {names[0]!r} and {names[1]!r}", path)
    y = (np.asarray(y_raw) == values[names.index(positive)]).astype(np.float64)
    negative = names[1 - names.index(positive)]
    return y, {negative: 0, positive: 1}
