"""NumPy sources: a folder with X.npy and y.npy (memory-mapped) or a .npz file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from logreg_torch.data.labels import _encode_labels
from logreg_torch.data.table import DataError, Table


def _load_npy(path: str | Path, positive_label: str | None, chunk_size: int,
              check_finite: bool = True) -> Table:
    p = Path(path)
    try:
        if p.is_dir():
            for name in ("X.npy", "y.npy"):
                if not (p / name).is_file():
                    raise DataError(f"no {name} (a folder for source npy holds X.npy and y.npy)",
                                    path)
            # Memory-mapped: nothing is read until a split asks for its rows.
            X, y = np.load(p / "X.npy", mmap_mode="r"), np.load(p / "y.npy", mmap_mode="r")
        elif p.suffix == ".npz" and p.is_file():
            with np.load(p) as archive:
                missing = [k for k in ("X", "y") if k not in archive.files]
                if missing:
                    raise DataError(f"no array {missing[0]!r} in the archive; it holds: "
                                    f"{', '.join(archive.files) or 'nothing'}", path)
                X, y = archive["X"], archive["y"]
        else:
            raise DataError(f"{'not found; ' if not p.exists() else ''}source npy wants a "
                            "folder with X.npy and y.npy, or a .npz file", path)
    except DataError:
        raise
    except (OSError, ValueError) as e:  # unreadable, truncated, or a pickled object array
        raise DataError(f"cannot read: {e}", path) from None
    if X.ndim != 2:
        raise DataError(f"X must be 2-D (rows x features), got shape {X.shape}", path)
    if X.dtype.kind not in "biuf":
        raise DataError(f"X must hold numbers, got dtype {X.dtype}", path)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or len(y) != len(X):
        raise DataError(f"X has {len(X)} rows but y has shape {y.shape}; need ({len(X)},)", path)
    if len(X) == 0 or X.shape[1] == 0:
        raise DataError(f"empty data set: X has shape {X.shape}", path)
    if check_finite and X.dtype.kind == "f":  # in chunks: a memory map is never read whole
        for start in range(0, len(X), chunk_size):
            bad = np.argwhere(~np.isfinite(X[start:start + chunk_size]))
            if len(bad):
                i, j = bad[0]
                raise DataError(f"X holds {X[start + i, j]} at row index {start + i}, column "
                                f"index {j}", path)
    y01, label_map = _encode_labels(np.asarray(y), positive_label, "y", path)
    names = [f"x{j}" for j in range(X.shape[1])]
    return Table(X, y01, names, label_map, f"npy {path}")
