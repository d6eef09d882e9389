"""The data sources by name (bundled sets, csv, npy, synthetic): load_table(cfg) -> Table."""

from __future__ import annotations

from pathlib import Path

from logreg_torch.config import DataConfig
from logreg_torch.data.csvfile import _load_csv, read_csv
from logreg_torch.data.labels import _encode_labels
from logreg_torch.data.npy import _load_npy
from logreg_torch.data.synthetic import make_classification
from logreg_torch.data.table import DataError, Table

DATASETS_DIR = Path(__file__).parent.parent / "datasets"
# source name -> (file in DATASETS_DIR, its target column)
BUNDLED = {"jackets": ("jackets.csv", "purchase"),
           "breast_cancer": ("breast_cancer.csv", "diagnosis")}
SOURCES = ("csv", "npy", "synthetic", *BUNDLED)


def load_table(cfg: DataConfig, seed: int, check_finite: bool = True) -> Table:
    """Load cfg.source (csv | npy | synthetic | jackets | breast_cancer) into a Table.

    ``check_finite=False`` leaves an npy source's NaN/inf check to the caller (``prepare``
    checks while it reads the rows, so that the file is read once).

    Labels may be any two distinct values; data.positive_label picks the one mapped to 1,
    otherwise default_positive_label decides (1/true, else the label that sorts last).
    """
    if cfg.source in BUNDLED or cfg.source == "synthetic":
        if cfg.path is not None:
            raise DataError(f"data.path is not used by data.source={cfg.source!r}; set "
                            f"data.source=csv or npy to read {cfg.path}")
    elif cfg.source in ("csv", "npy") and cfg.path is None:
        raise DataError(f"data.source={cfg.source!r} needs data.path")
    if cfg.source in ("npy", "synthetic") and cfg.features is not None:
        raise DataError(f"data.features selects CSV columns; it does not apply to {cfg.source!r}")
    if cfg.source in BUNDLED:
        name, target = BUNDLED[cfg.source]
        return _load_csv(DATASETS_DIR / name, cfg.target or target, cfg.features,
                         cfg.positive_label, f"bundled data set {cfg.source!r}")
    if cfg.source == "csv":
        if cfg.target is None:
            columns = ", ".join(read_csv(cfg.path).header)
            raise DataError(f"data.target must name the label column; columns are: {columns}",
                            cfg.path)
        return _load_csv(cfg.path, cfg.target, cfg.features, cfg.positive_label, f"csv {cfg.path}")
    if cfg.source == "npy":
        return _load_npy(cfg.path, cfg.positive_label, cfg.chunk_size, check_finite)
    if cfg.source == "synthetic":
        X, y = make_classification(cfg.n_samples, cfg.n_features, cfg.n_informative,
                                   cfg.class_sep, cfg.weights, seed)
        y01, label_map = _encode_labels(y, cfg.positive_label, "synthetic labels", None)
        return Table(X, y01, [f"x{j}" for j in range(X.shape[1])], label_map,
                     f"synthetic data (seed {seed})")
    raise DataError(f"data.source={cfg.source!r} is not one of: {', '.join(SOURCES)}")
