"""Synthetic two-class data, a numpy take on sklearn's make_classification."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from logreg_torch.data.table import DataError


def make_classification(n_samples: int, n_features: int, n_informative: int, class_sep: float,
                        weights: Sequence[float] | None,
                        seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two classes of Gaussian clusters, a numpy take on sklearn's make_classification.

    As there: each class gets two clusters (one when n_informative is 1) centred on distinct
    vertices of a hypercube with side 2 * class_sep in the informative subspace, each cluster
    a standard normal times a random matrix (so its features covary); the remaining features
    are pure noise. Unlike it: no redundant or repeated features, no label noise (flip_y),
    informative features come first. weights are the class proportions [w0, w1] (or [w0]).
    """
    if n_samples < 2 or not 1 <= n_informative <= n_features:
        raise DataError("synthetic data needs data.n_samples >= 2 and 1 <= data.n_informative "
                        f"<= data.n_features, got {n_samples}, {n_informative}, {n_features}")
    w = [0.5, 0.5] if weights is None else [float(v) for v in weights]
    if len(w) == 1:
        w.append(1.0 - w[0])
    if len(w) != 2 or min(w) <= 0 or abs(sum(w) - 1.0) > 1e-6:
        raise DataError(f"data.weights={weights} must be two positive class proportions "
                        "summing to 1 (or one, the proportion of class 0)")
    n0 = math.floor(n_samples * w[0] + 0.5)
    if not 0 < n0 < n_samples:
        raise DataError(f"data.weights={weights} leaves a class empty with {n_samples} samples")
    rng = np.random.default_rng(seed)
    per_class = 2 if n_informative >= 2 else 1
    while True:  # distinct vertices; a few tries at most
        vertices = rng.integers(0, 2, size=(2 * per_class, n_informative))
        if len(np.unique(vertices, axis=0)) == len(vertices):
            break
    centroids = (2.0 * vertices - 1.0) * class_sep
    y = (np.arange(n_samples) >= n0).astype(np.int64)  # n0 zeros then ones; shuffled below
    # Cluster c belongs to class c % 2, as in sklearn; a class's rows alternate between its
    # clusters. Columns past n_informative stay pure noise.
    cluster = y + 2 * (np.arange(n_samples) % per_class)
    X = rng.standard_normal((n_samples, n_features))
    for c, centroid in enumerate(centroids):
        rows = cluster == c
        cov = 2.0 * rng.random((n_informative, n_informative)) - 1.0
        X[rows, :n_informative] = X[rows, :n_informative] @ cov + centroid
    order = rng.permutation(n_samples)
    return X[order], y[order]
