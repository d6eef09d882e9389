"""Export scikit-learn's copy of the Wisconsin diagnostic breast cancer data to a plain CSV.

Writes logreg_torch/datasets/breast_cancer.csv: 569 rows in scikit-learn's order, the 30 feature
columns under scikit-learn's names with spaces replaced by underscores, and a `diagnosis`
column holding `malignant` or `benign`. The numbers are written with repr(), which round-trips
a float64 exactly, so the CSV equals load_breast_cancer().data bit for bit.

scikit-learn is needed only here (and in the tests); logreg_torch reads the CSV without it.

    python scripts/export_breast_cancer.py [--out PATH]
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from sklearn.datasets import load_breast_cancer

OUT = Path(__file__).resolve().parents[1] / "logreg_torch" / "datasets" / "breast_cancer.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    bunch = load_breast_cancer()
    names = [str(name).replace(" ", "_") for name in bunch.feature_names]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow([*names, "diagnosis"])
        for features, target in zip(bunch.data, bunch.target, strict=True):
            # sklearn's target: 0 = malignant, 1 = benign (bunch.target_names).
            writer.writerow([*(repr(float(v)) for v in features), bunch.target_names[target]])
    print(f"wrote {len(bunch.data)} rows x {len(names)} features to {args.out}")


if __name__ == "__main__":
    main()
