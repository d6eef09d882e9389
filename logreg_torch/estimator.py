"""``LogisticRegression``: a scikit-learn estimator over the project's full-batch solvers.

Change one import line of a scikit-learn script::

    from logreg_torch.estimator import LogisticRegression

Binary classification only. The fit minimises scikit-learn's objective,

    sum_i s_i * loss_i + ||w||^2 / (2 C)      (penalty "l2"; ||w||_1 for "l1"; none for None)

with s_i = sample_weight_i * class_weight[y_i], divided by S = sum_i s_i as scikit-learn's
lbfgs does: the mean of the weighted losses (weights scaled to mean 1) plus l2 = 1 / (C S),
which is the project's ``loss.l2`` (logreg_torch.objective). So ``tol`` means what it means
for scikit-learn's lbfgs and for ``logreg-torch train``: the largest gradient component of that
objective. The solvers are the command line's: L-BFGS (with its float64 Newton finish) or
Newton (logreg_torch.fullbatch); l1 takes Newton's proximal form (logreg_torch.prox_newton).

Nothing is written to disk: no run folder, no TensorBoard, no checkpoint.
"""

from __future__ import annotations

import numbers
import os
import sys
import warnings

# As the command line does (cli._quiet_openmp_threads): OpenMP threads that sleep when idle,
# decided before torch loads OpenMP and only if the user has not chosen. Spinning threads
# take the cores the fused path's thread pool needs: scripts/bench_estimator.py measures both.
if "torch" not in sys.modules:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.base import BaseEstimator, ClassifierMixin  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.utils.validation import check_is_fitted  # noqa: E402

from logreg_torch.estimator_data import FitRows, fit_rows, predict_rows  # noqa: E402

__all__ = ["LogisticRegression"]

PENALTIES = ("l2", "l1", None)
SOLVERS = ("lbfgs", "newton")
DTYPES = {"float32": torch.float32, "float64": torch.float64}


class LogisticRegression(ClassifierMixin, BaseEstimator):
    """Binary logistic regression with scikit-learn's parameters, fitted by logreg_torch.

    ``penalty``, ``C``, ``tol``, ``max_iter``, ``fit_intercept``, ``class_weight``,
    ``warm_start`` and ``verbose`` mean what they mean in scikit-learn; ``solver`` is "lbfgs"
    or "newton"; ``device`` "auto" (a GPU when there is one), "cpu", "cuda" or "cuda:N";
    ``dtype`` "float64" (scikit-learn's precision) or "float32" (faster, on a GPU above all).
    A torch tensor X is used on its own device (a CUDA tensor is not copied to the host).
    """

    def __init__(self, penalty: str | None = "l2", *, C: float = 1.0, tol: float = 1e-4,
                 max_iter: int = 100, fit_intercept: bool = True, class_weight=None,
                 solver: str = "lbfgs", warm_start: bool = False, verbose: int = 0,
                 device: str = "auto", dtype: str = "float64") -> None:
        self.penalty = penalty
        self.C = C
        self.tol = tol
        self.max_iter = max_iter
        self.fit_intercept = fit_intercept
        self.class_weight = class_weight
        self.solver = solver
        self.warm_start = warm_start
        self.verbose = verbose
        self.device = device
        self.dtype = dtype

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False  # binary only
        tags.input_tags.sparse = False  # a scipy sparse X is refused with a TypeError
        return tags

    def _check_params(self) -> None:
        if self.penalty not in PENALTIES:
            raise ValueError(f"penalty={self.penalty!r} is not supported; use 'l2', 'l1' or None")
        if self.solver not in SOLVERS:
            raise ValueError(f"solver={self.solver!r} is not supported; use 'lbfgs' or 'newton'")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype={self.dtype!r} is not supported; use 'float32' or 'float64'")
        if not _valid_device(self.device):
            raise ValueError(f"device={self.device!r} is not supported; use 'auto', 'cpu', "
                             f"'cuda' or 'cuda:N'")
        if not (isinstance(self.C, numbers.Real) and self.C > 0):
            raise ValueError(f"C must be a positive number, got {self.C!r}")
        if not (isinstance(self.tol, numbers.Real) and self.tol >= 0):
            raise ValueError(f"tol must be a number >= 0, got {self.tol!r}")
        if not (isinstance(self.max_iter, numbers.Integral) and self.max_iter >= 0):
            raise ValueError(f"max_iter must be an integer >= 0, got {self.max_iter!r}")

    def fit(self, X, y, sample_weight=None) -> LogisticRegression:
        """Fit on X (n_samples, n_features) and y (two classes); returns self."""
        self._check_params()
        device = torch.device("cpu") if self.device == "cpu" else _device(self.device)
        rows = fit_rows(self, X, y, sample_weight, device, DTYPES[self.dtype])
        start = None
        if self.warm_start and hasattr(self, "coef_") and self.coef_.shape[1] == rows.X.shape[1]:
            start = (self.coef_.ravel(), float(self.intercept_[0]))
        theta, report = _solve(self, rows, start)
        self._store(theta, rows, report)
        return self

    def _store(self, theta: torch.Tensor, rows: FitRows, report) -> None:
        d = rows.X.shape[1]
        values = theta.detach().cpu().numpy()
        self.coef_ = values[:d].reshape(1, d).copy()
        self.intercept_ = (values[d:d + 1] if self.fit_intercept
                           else np.zeros(1, dtype=values.dtype)).copy()
        self.n_iter_ = np.array([report.n_iter], dtype=np.int32)
        self._report = report
        self._rows = rows.for_summary()  # dropped by pickling (__getstate__)
        if not report.converged:
            how = ("max_iter ran out" if report.reason == "max_iter" else
                   "rounding stopped the solver")
            solver = "newton (l1, proximal)" if self.penalty == "l1" else self.solver
            warnings.warn(
                f"logreg_torch {solver} did not converge: {how} after {report.n_iter} "
                f"iterations at max|grad| {report.grad_max:.3g} > tol {self.tol:g}; increase "
                f"max_iter, or scale the features", ConvergenceWarning, stacklevel=3)

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state.pop("_rows", None)  # training rows: not part of the model
        return state

    def decision_function(self, X) -> np.ndarray:
        """Logits, shape (n_samples,)."""
        check_is_fitted(self)
        return predict_rows(self, X)

    def predict_proba(self, X) -> np.ndarray:
        """[P(classes_[0]), P(classes_[1])] per row, shape (n_samples, 2)."""
        z = self.decision_function(X)
        p1 = _expit(z)
        return np.column_stack([_expit(-z), p1])

    def predict_log_proba(self, X) -> np.ndarray:
        z = self.decision_function(X)
        # log sigmoid(z) = -log(1 + e^-z), exact in both tails
        return np.column_stack([-np.logaddexp(0, z), -np.logaddexp(0, -z)])

    def predict(self, X) -> np.ndarray:
        z = self.decision_function(X)
        return self.classes_[(z > 0).astype(int)]

    def summary(self, alpha: float = 0.05):
        """The coefficient table of ``logreg-torch summary`` (statsmodels' Logit columns) for
        an unpenalized or l2 fit, on the rows of the last ``fit``. Returns a
        ``logreg_torch.inference.CoefficientTable``: ``print(table.format())``."""
        check_is_fitted(self)
        from logreg_torch.estimator_fit import coefficient_table_of

        if self.penalty == "l1":
            raise ValueError("summary() needs penalty 'l2' or None: |w| has no second "
                             "derivative at 0, so an l1 fit has no standard errors")
        if getattr(self, "_rows", None) is None:
            raise ValueError("summary() needs the training rows, which a pickled estimator "
                             "does not keep: fit it again")
        return coefficient_table_of(self, self._rows, alpha)


def _expit(z: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0, -z))


def _device(name: str) -> torch.device:
    """The device for ``device=name``; one the machine lacks is a ValueError in the
    estimator's words (runtime.resolve_device speaks of the config key)."""
    from logreg_torch.config import ConfigError
    from logreg_torch.runtime import machine_devices, resolve_device

    try:
        return resolve_device(name)
    except ConfigError:
        raise ValueError(f"device={name!r} but this machine has {machine_devices()}; use "
                         f"device='cpu' or 'auto'") from None


def _valid_device(device) -> bool:
    if device in ("auto", "cpu", "cuda"):
        return True
    return (isinstance(device, str) and device.startswith("cuda:")
            and device[5:].isdigit())


def _solve(est: LogisticRegression, rows: FitRows, start):
    """(theta = [w..., b], report) by the solver the estimator names."""
    from logreg_torch.estimator_fit import objective_of, solve

    return solve(est, rows, objective_of(est, rows), start)
