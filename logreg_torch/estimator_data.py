"""The estimator's inputs: scikit-learn's validation for arrays and DataFrames (its exception
types and messages), torch tensors taken on their own device; per-row weights from
``sample_weight`` and ``class_weight``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import (
    _check_feature_names,
    _check_n_features,
    _check_sample_weight,
    column_or_1d,
    validate_data,
)
from torch import Tensor


@dataclass
class FitRows:
    """The training rows as the solvers take them."""

    X: Tensor  # (n, d) on the fit's device, in its dtype
    y: Tensor  # 0. / 1. (1 = classes_[1]), same device and dtype
    weight: Tensor | None  # per row, scaled to mean 1; None when all rows weigh the same
    weight_sum: float  # S = sum of sample_weight * class_weight: the penalty is 1 / (C S)
    handover: tuple | None = None  # a stalled float32 solve's handover (fullbatch.SolveState)
    source: object = None  # X as validated, before it went to the device (for summary)

    def for_summary(self) -> FitRows:
        """What ``summary()`` needs, without holding a device copy of X: the validated X
        (the caller's own array or tensor when no conversion was needed), y and the weights
        on the host."""
        return FitRows(self.source, self.y.cpu(), None if self.weight is None
                       else self.weight.cpu(), self.weight_sum, self.handover)


def _host(values):
    """A torch tensor (y, sample_weight) as a NumPy array; anything else as it is."""
    return values.detach().cpu().numpy() if isinstance(values, Tensor) else values


def _tensor_X(est, X: Tensor, reset: bool) -> Tensor:
    """A torch X checked as check_array would check an array, without leaving its device."""
    if X.layout != torch.strided:
        raise TypeError("a sparse torch tensor was passed, but dense data is required; use "
                        "X.to_dense()")
    if X.dim() != 2:
        raise ValueError(f"Expected a 2D tensor, got {X.dim()}D with shape {tuple(X.shape)}")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"Found tensor with shape {tuple(X.shape)}; at least one sample and "
                         f"one feature are required")
    if not (X.is_floating_point() or X.dtype in (torch.int32, torch.int64, torch.bool)):
        raise ValueError(f"X of dtype {X.dtype} is not supported; use a float tensor")
    if X.is_floating_point() and not bool(torch.isfinite(X).all()):  # one sync, no copy
        raise ValueError("Input X contains NaN or infinity.")
    _check_feature_names(est, X, reset=reset)
    _check_n_features(est, X, reset=reset)
    return X


def _host_X(est, X, y, reset: bool):
    kwargs = dict(dtype=[np.float64, np.float32], order="C", accept_sparse=False)
    if y is None:
        return validate_data(est, X, reset=reset, **kwargs), None
    return validate_data(est, X, y, reset=reset, y_numeric=False, **kwargs)


def _to_device(X: np.ndarray, device: torch.device, dtype: torch.dtype) -> Tensor:
    if not X.flags.writeable:  # torch.from_numpy wants a writeable array (a read-only memmap)
        X = np.array(X, dtype=torch.empty((), dtype=dtype).numpy().dtype)
    return torch.from_numpy(X).to(device=device, dtype=dtype)


def _classes(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(classes_, y as 0/1): scikit-learn's target checks, then binary only."""
    check_classification_targets(y)
    classes = np.unique(y)
    if len(classes) < 2:
        raise ValueError(f"This solver needs samples of at least 2 classes in the data, but "
                         f"the data contains only one class: {classes[0]!r}")
    y_type = type_of_target(y, input_name="y")
    if y_type != "binary":
        raise ValueError(f"Only binary classification is supported. The type of the target "
                         f"is {y_type}.")
    return classes, (y == classes[1])


def fit_rows(est, X, y, sample_weight, device: torch.device, dtype: torch.dtype) -> FitRows:
    """Validate (X, y, sample_weight) for ``fit``; sets ``classes_``, ``n_features_in_`` and
    ``feature_names_in_`` on ``est``."""
    if isinstance(X, Tensor):
        X = _tensor_X(est, X, reset=True)
        if est.device == "auto":
            device = X.device  # a tensor is used where it is
        y = column_or_1d(np.asarray(_host(y)), warn=True)
        if len(y) != X.shape[0]:
            raise ValueError(f"Found input variables with inconsistent numbers of samples: "
                             f"[{X.shape[0]}, {len(y)}]")
        X_fit = X.to(device=device, dtype=dtype)
    else:
        X, y = _host_X(est, X, _host(y), reset=True)
        X_fit = _to_device(X, device, dtype)
    est.classes_, positive = _classes(y)
    host_dtype = np.float64 if dtype == torch.float64 else np.float32
    sw = _check_sample_weight(_host(sample_weight), np.empty((len(y), 0)), dtype=np.float64,
                              ensure_non_negative=True)
    if est.class_weight is not None:
        cw = compute_class_weight(est.class_weight, classes=est.classes_, y=y)
        sw = sw * cw[positive.astype(int)]
    total = float(sw.sum())
    if not total > 0:
        raise ValueError("sample_weight (times class_weight) sums to zero: no row has weight")
    weight = None
    if not np.all(sw == sw[0]):
        weight = torch.from_numpy((sw * (len(sw) / total)).astype(host_dtype)).to(device)
    y_fit = torch.from_numpy(positive.astype(host_dtype)).to(device)
    return FitRows(X_fit, y_fit, weight, total, source=X)


def predict_rows(est, X) -> np.ndarray:
    """The logits X @ coef_ + intercept_ (NumPy), on X's device for a tensor."""
    w, b = est.coef_.ravel(), est.intercept_[0]
    if isinstance(X, Tensor):
        X = _tensor_X(est, X, reset=False)
        dtype = X.dtype if X.is_floating_point() else torch.float64
        wt = torch.as_tensor(w, device=X.device, dtype=dtype)
        return (X.to(dtype) @ wt + float(b)).cpu().numpy()
    X, _ = _host_X(est, X, None, reset=False)
    return X @ w.astype(X.dtype, copy=False) + b
