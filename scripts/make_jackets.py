"""Generate the bundled jackets data set (logreg_torch/datasets/jackets.csv).

The story (see the log-loss article): a clothing company wants to know whether a customer will
buy a jacket (class 1) or a cardigan (class 0). The rows are synthetic customers. The log-odds of
"jacket" are a linear function of the standardized features, and the label is drawn from the
resulting probability, so a logistic model is the right model and cannot be perfect: the best
accuracy is around 80-85%.

Run once; the output is committed. Re-running with the same seed rewrites the same file.

    python scripts/make_jackets.py [--out PATH] [--rows N] [--seed S]
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "logreg_torch" / "datasets" / "jackets.csv"

# Effect of one standard deviation of each feature on the log-odds of "jacket".
# Cold region and outdoor interest drive jackets; older customers lean to cardigans;
# visits and days since the last visit matter little (a realistic pair of weak features).
LOG_ODDS_PER_STD = {
    "age": -1.0,
    "income_k": 0.4,
    "visits_last_month": 0.15,
    "avg_basket_eur": 0.5,
    "days_since_last_visit": -0.2,
    "lives_in_cold_region": 1.1,
    "outdoor_interest_score": 1.5,
}
INTERCEPT = 0.2


def make_customers(rows: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    age = np.clip(rng.normal(42, 13, rows), 18, 80).round()
    income_k = np.clip(rng.lognormal(np.log(38), 0.4, rows), 12, 200).round(1)
    visits = rng.poisson(3.0, rows).astype(float)
    # Richer customers fill bigger baskets.
    avg_basket = np.clip(25 + 0.9 * income_k + rng.normal(0, 18, rows), 8, None).round(2)
    days_since = np.clip(rng.exponential(18, rows), 0, 365).round()
    cold = (rng.random(rows) < 0.4).astype(float)
    # Younger customers report more outdoor interest, so the features are not independent.
    outdoor = np.clip(rng.normal(6.5 - 0.05 * (age - 42), 2.0, rows), 0, 10).round(1)
    return {
        "age": age,
        "income_k": income_k,
        "visits_last_month": visits,
        "avg_basket_eur": avg_basket,
        "days_since_last_visit": days_since,
        "lives_in_cold_region": cold,
        "outdoor_interest_score": outdoor,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=20231214)
    args = parser.parse_args()

    cols = make_customers(args.rows, args.seed)
    logits = np.full(args.rows, INTERCEPT)
    for name, effect in LOG_ODDS_PER_STD.items():
        x = cols[name]
        logits += effect * (x - x.mean()) / x.std()
    probs = 1.0 / (1.0 + np.exp(-logits))
    # Drawing the label from the probability is the noise: P(jacket | x) = sigmoid(w.x + b).
    rng = np.random.default_rng(args.seed + 1)
    jacket = rng.random(args.rows) < probs

    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow([*cols, "purchase"])
        for i in range(args.rows):
            values = [_fmt(cols[name][i]) for name in cols]
            writer.writerow([*values, "jacket" if jacket[i] else "cardigan"])
    bayes = np.mean(np.where(jacket, probs, 1 - probs) >= 0.5)
    print(f"wrote {args.rows} rows to {args.out}: {jacket.mean():.1%} jackets, "
          f"accuracy of the true model {bayes:.1%}")


def _fmt(value: float) -> str:
    # Whole numbers without ".0"; the rest keep the decimals they were rounded to.
    return str(int(value)) if float(value).is_integer() else repr(float(value))


if __name__ == "__main__":
    main()
