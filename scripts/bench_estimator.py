"""The estimator (logreg_torch.estimator.LogisticRegression) against scikit-learn's.

    python scripts/bench_estimator.py [--n 1000000] [--d 100] [--repeat 3] [--small-repeat 30]

1. ``fit`` on n x d float32 (C=1, tol 1e-6): ours (dtype float32, CPU, L-BFGS) vs
   ``sklearn.linear_model.LogisticRegression(solver="lbfgs")`` on the same float32 array.
   Both are checked to land on the same optimum: each objective (scikit-learn's, divided by
   C*n, in float64) within 1e-6 relative of scikit-learn's newton-cholesky at tol 1e-10.
   Run twice, each in its own process: with OMP_WAIT_POLICY=PASSIVE (what importing the
   estimator sets when torch is not loaded yet, as ``logreg-torch`` does) and with it unset
   (torch imported first, so the estimator cannot choose: OpenMP's default, spinning threads).
2. Overhead on breast_cancer (569 x 30, standardized, scikit-learn's defaults, float64).

Timings are interleaved (ours, theirs, theirs, ours, ...), summarised by medians (min-max);
the figure is the ratio of the medians. On a GPU (``--device cuda``) section 1 times ours on it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import warnings


def _objective(X, y, coef, intercept, C: float) -> float:
    import numpy as np

    z = X.astype(np.float64) @ coef.astype(np.float64) + float(intercept)
    w = coef.astype(np.float64)
    return float(np.mean(np.logaddexp(0.0, z) - y * z) + (w @ w) / (2 * C * len(y)))


def _interleaved(fns: dict, repeat: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for r in range(repeat):
        for name in names if r % 2 == 0 else names[::-1]:
            t = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t)
    return times


def _line(label: str, ts: list[float]) -> str:
    return f"{label}: {statistics.median(ts):.3f} s ({min(ts):.3f}-{max(ts):.3f})"


def large(n: int, d: int, repeat: int, device: str) -> None:
    import numpy as np
    from sklearn.linear_model import LogisticRegression as SkLogisticRegression

    from logreg_torch.estimator import LogisticRegression

    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, d), dtype=np.float32)
    w_true = rng.standard_normal(d) / np.sqrt(d)
    y = (rng.random(n) < 1 / (1 + np.exp(-(X @ w_true)))).astype(np.float64)
    with warnings.catch_warnings():  # its line search hands over to lbfgs near the optimum
        warnings.simplefilter("ignore")
        ref = SkLogisticRegression(C=1.0, solver="newton-cholesky", tol=1e-10).fit(X, y)
    f_star = _objective(X, y, ref.coef_.ravel(), ref.intercept_[0], 1.0)
    fitted = {}
    fns = {
        "ours": lambda: fitted.__setitem__("ours", LogisticRegression(
            C=1.0, tol=1e-6, dtype="float32", device=device).fit(X, y)),
        "sklearn": lambda: fitted.__setitem__("sklearn", SkLogisticRegression(
            C=1.0, tol=1e-6, solver="lbfgs").fit(X, y)),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        times = _interleaved(fns, repeat)
    policy = os.environ.get("OMP_WAIT_POLICY", "unset")
    print(f"fit {n} x {d} float32, C=1, tol 1e-6, OMP_WAIT_POLICY={policy}, device {device}")
    for name, est in fitted.items():
        f = _objective(X, y, est.coef_.ravel(), est.intercept_[0], 1.0)
        print(f"  {_line(name, times[name])}; n_iter {est.n_iter_[0]}, objective "
              f"{abs(f - f_star) / f_star:.1e} relative from the optimum "
              f"({'ok' if abs(f - f_star) <= 1e-6 * f_star else 'NOT within 1e-6'})")
    ratio = statistics.median(times["ours"]) / statistics.median(times["sklearn"])
    print(f"  ratio ours / sklearn: {ratio:.3f}")


def small(repeat: int) -> None:
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression as SkLogisticRegression
    from sklearn.preprocessing import StandardScaler

    from logreg_torch.estimator import LogisticRegression

    X, y = load_breast_cancer(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    LogisticRegression(device="cpu").fit(X, y)  # first-call costs (imports) out of the timing
    fns = {"ours": lambda: LogisticRegression(device="cpu").fit(X, y),
           "sklearn": lambda: SkLogisticRegression().fit(X, y)}
    times = _interleaved(fns, repeat)
    ratio = statistics.median(times["ours"]) / statistics.median(times["sklearn"])
    print(f"fit 569 x 30 (breast_cancer, standardized), defaults: "
          f"{_line('ours', times['ours'])}, {_line('sklearn', times['sklearn'])}; "
          f"ratio {ratio:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--d", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--small-repeat", type=int, default=30)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--child", choices=["passive", "unset"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.child == "unset":
            import torch  # noqa: F401  loaded first: the estimator leaves OpenMP's default
        large(args.n, args.d, args.repeat, args.device)
        return
    print(f"load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs", flush=True)
    for policy in ("passive", "unset"):
        env = dict(os.environ)
        env.pop("OMP_WAIT_POLICY", None)
        if policy == "passive":
            env["OMP_WAIT_POLICY"] = "PASSIVE"
        subprocess.run([sys.executable, __file__, "--child", policy, "--n", str(args.n),
                        "--d", str(args.d), "--repeat", str(args.repeat), "--device",
                        args.device], env=env, check=True)
    small(args.small_repeat)


if __name__ == "__main__":
    main()
