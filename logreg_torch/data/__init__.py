"""Data sets (bundled, CSV, NumPy, synthetic), train/val/test splits and standardization.

A mistake in a data file raises DataError with one line that names the file, the line as an
editor numbers it (header = line 1) and the column. Nothing is silently dropped.

In data-flow order: ``sources`` (with ``csvfile``, ``npy``, ``synthetic``) load a ``Table``;
``splits`` cut it; ``preprocess`` standardizes it into ``Prepared`` tensors; ``streaming`` does
the same for training rows that stay on disk; ``scoring`` reads new rows for a trained model.
"""

from logreg_torch.data.csvfile import CsvFile, read_csv
from logreg_torch.data.labels import default_positive_label
from logreg_torch.data.preprocess import apply_standardizer, fit_standardizer, prepare
from logreg_torch.data.scoring import read_features_csv, read_labeled
from logreg_torch.data.sources import BUNDLED, DATASETS_DIR, SOURCES, load_table
from logreg_torch.data.splits import split, split_indices
from logreg_torch.data.streaming import (
    Stream,
    fit_standardizer_streaming,
    prepare_streaming,
    stream_batch,
)
from logreg_torch.data.synthetic import make_classification
from logreg_torch.data.table import DataError, Prepared, Splits, Table

__all__ = [
    "BUNDLED", "DATASETS_DIR", "SOURCES", "CsvFile", "DataError", "Prepared", "Splits", "Stream",
    "Table", "apply_standardizer", "default_positive_label", "fit_standardizer",
    "fit_standardizer_streaming", "load_table", "make_classification", "prepare",
    "prepare_streaming", "read_csv", "read_features_csv", "read_labeled", "split",
    "split_indices", "stream_batch",
]
