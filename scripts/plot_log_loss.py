"""Figures for the log-loss story: why logistic regression is trained on log loss, not MSE.

    python scripts/plot_log_loss.py [--out scripts/figures] [--logdir runs-story/log-loss]

Writes two PNGs (atomically) and the same figures to a TensorBoard run, outside ``runs/``:
there its images would sort before ``train/loss`` in every run's Time Series
(``tensorboard --logdir runs-story`` shows them):
- ``log_loss_curves.png``: the loss of one customer against the predicted probability of
  "jacket", for a jacket buyer (class 1, -ln p) and a cardigan buyer (class 0, -ln(1 - p)).
- ``mse_vs_log_loss.png``: on a small 1-D data set, the cost of the model p = sigmoid(w * x)
  against its weight w, with MSE and with log loss. Log loss is convex in w; MSE of the sigmoid
  outputs is not (it flattens into plateaus), which is what makes gradient descent on it hard.
  The script checks this numerically with second differences and prints the result.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
from pathlib import Path

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor

from logreg_torch.losses import binary_cross_entropy, binary_cross_entropy_with_logits

FIGURES = Path(__file__).resolve().parent / "figures"
LOGDIR = Path("runs-story") / "log-loss"
# The two customers the article works through: a jacket buyer given p = 0.94 and a cardigan
# buyer given p = 0.1.
STORY_POINTS = ((0.94, 1), (0.10, 0))
# Second differences of a convex curve are >= 0; this allows for float64 rounding.
CONVEX_TOL = 1e-9


def loss_curves(n: int = 999) -> dict[str, Tensor]:
    """Per-customer log loss on a grid of ``n`` probabilities in (0, 1), float64.

    Keys: ``probs``, ``class1`` (-ln p, a jacket buyer) and ``class0`` (-ln(1 - p), a cardigan
    buyer), computed with our ``binary_cross_entropy``.
    """
    probs = torch.linspace(0, 1, n + 2, dtype=torch.float64)[1:-1]
    ones, zeros = torch.ones_like(probs), torch.zeros_like(probs)
    return {
        "probs": probs,
        "class1": binary_cross_entropy(probs, ones, reduction="none"),
        "class0": binary_cross_entropy(probs, zeros, reduction="none"),
    }


def story_data(n: int = 20, seed: int = 0) -> tuple[Tensor, Tensor]:
    """A small 1-D data set (x, y), float64: half cardigan buyers around x = -0.8, half jacket
    buyers around x = +0.8, with spread 1, so the classes overlap (with the defaults, 3 of the
    20 lie on the other class's side of 0, so no weight classifies all of them)."""
    gen = torch.Generator().manual_seed(seed)
    y = (torch.arange(n) >= n // 2).to(torch.float64)
    x = 0.8 * (2 * y - 1) + torch.randn(n, generator=gen, dtype=torch.float64)
    return x, y


def cost_vs_weight(weights: Tensor | None = None, n: int = 20, seed: int = 0,
                   ) -> dict[str, Tensor]:
    """Cost of the model p = sigmoid(w * x) (no bias) on ``story_data`` for each weight w.

    Keys: ``weights`` (default 401 points over [-10, 10]), ``mse`` (mean squared error of the
    sigmoid outputs), ``log_loss`` (computed from the logits w * x, so exact in the tails),
    ``x`` and ``y``.
    """
    if weights is None:
        weights = torch.linspace(-10, 10, 401, dtype=torch.float64)
    x, y = story_data(n, seed)
    logits = weights[:, None] * x[None, :]  # one row per weight
    targets = y.expand_as(logits)
    mse = (torch.sigmoid(logits) - targets).pow(2).mean(dim=1)
    log_loss = binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(dim=1)
    return {"weights": weights, "mse": mse, "log_loss": log_loss, "x": x, "y": y}


def second_differences(curve: Tensor) -> Tensor:
    """c[i-1] - 2 c[i] + c[i+1]: all >= 0 (up to rounding) on a uniform grid iff convex there."""
    return curve[:-2] - 2 * curve[1:-1] + curve[2:]


def convexity_check(costs: dict[str, Tensor], tol: float = CONVEX_TOL) -> dict[str, dict]:
    """For ``mse`` and ``log_loss`` of ``cost_vs_weight``: the smallest second difference, the
    weight where it occurs, and whether the curve is convex (all >= -tol)."""
    result = {}
    for name in ("mse", "log_loss"):
        d2 = second_differences(costs[name])
        i = int(torch.argmin(d2))
        result[name] = {
            "min_second_difference": d2[i].item(),
            "at_weight": costs["weights"][i + 1].item(),
            "negative_count": int((d2 < -tol).sum()),
            "convex": bool((d2 >= -tol).all()),
        }
    return result


def _new_figure(**kwargs) -> Figure:
    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)  # draw with Agg, with no pyplot state or GUI backend involved
    return fig


def plot_loss_curves(curves: dict[str, Tensor]) -> Figure:
    fig = _new_figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    p = curves["probs"].numpy()
    ax.plot(p, curves["class1"].numpy(), color="tab:red", label="bought a jacket (class 1): -ln p")
    ax.plot(p, curves["class0"].numpy(), color="black",
            label="bought a cardigan (class 0): -ln(1 - p)")
    for (prob, target), offset in zip(STORY_POINTS, ((-60, 60), (40, 50)), strict=True):
        loss = -math.log(prob if target == 1 else 1 - prob)
        bought = "jacket" if target == 1 else "cardigan"
        ax.plot(prob, loss, "o", color="tab:red" if target == 1 else "black")
        ax.annotate(f"{bought} buyer, p = {prob:g}\nloss = {loss:.3f}", (prob, loss),
                    xytext=offset, textcoords="offset points", ha="center",
                    arrowprops={"arrowstyle": "->", "color": "0.4"})
    ax.set_ylim(0, 5)
    ax.set_xlim(0, 1)
    ax.set_xlabel('predicted probability of "jacket", p')
    ax.set_ylabel("log loss of one customer")
    ax.set_title("Log loss: low when right, unbounded when confidently wrong")
    ax.legend(loc="upper center")
    ax.grid(alpha=0.3)
    return fig


def plot_mse_vs_log_loss(costs: dict[str, Tensor], check: dict[str, dict]) -> Figure:
    fig = _new_figure(figsize=(10, 4.2), layout="constrained")
    axes = fig.subplots(1, 2, sharex=True)
    w = costs["weights"].numpy()
    for ax, name, color, title in (
        (axes[0], "mse", "tab:blue", "MSE of sigmoid outputs: not convex"),
        (axes[1], "log_loss", "tab:red", "Log loss: convex"),
    ):
        cost = costs[name].numpy()
        ax.plot(w, cost, color=color, label=name.replace("_", " ").replace("mse", "MSE"))
        i = int(cost.argmin())
        ax.plot(w[i], cost[i], "o", color=color)
        ax.annotate(f"minimum at w = {w[i]:.2f}", (w[i], cost[i]), xytext=(8, 30),
                    textcoords="offset points", ha="left",
                    arrowprops={"arrowstyle": "->", "color": "0.4"})
        # Shade where the curve bends down: a convex curve has no such region.
        concave = second_differences(costs[name]).numpy() < -CONVEX_TOL
        if concave.any():
            top = cost.max() * 1.05
            ax.fill_between(w[1:-1], 0, top, where=concave, color="0.85",
                            label="bends down (2nd difference < 0)")
        ax.set_xlabel("weight w of the model p = sigmoid(w x)")
        ax.set_ylabel("cost over the data set")
        ax.set_title(title)
        ax.set_ylim(bottom=0)
        ax.legend(loc="upper right")
        ax.grid(alpha=0.3)
    n = len(costs["x"])
    fig.suptitle(f"The same model on {n} overlapping customers, two costs "
                 f"(min 2nd difference: MSE {check['mse']['min_second_difference']:.2e}, "
                 f"log loss {check['log_loss']['min_second_difference']:.2e})")
    return fig


def save_png(fig: Figure, path: Path) -> None:
    """Write ``fig`` to ``path`` atomically: a temp file in the same folder, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".png")
    try:
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, format="png", dpi=120)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a figure is for everyone to read
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> dict:
    """Draw both figures, write the PNGs and the TensorBoard run; return paths and checks."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=FIGURES, help="folder for the PNGs")
    parser.add_argument("--logdir", type=Path, default=LOGDIR, help="TensorBoard run folder")
    args = parser.parse_args(argv)

    curves = loss_curves()
    costs = cost_vs_weight()
    check = convexity_check(costs)
    figures = {
        "log_loss_curves": plot_loss_curves(curves),
        "mse_vs_log_loss": plot_mse_vs_log_loss(costs, check),
    }
    paths = {}
    for name, fig in figures.items():
        paths[name] = args.out / f"{name}.png"
        save_png(fig, paths[name])

    # Imported here: it pulls in tensorboard, which the figure functions above do not need.
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(log_dir=str(args.logdir)) as writer:
        for name, fig in figures.items():
            writer.add_figure(f"story/{name}", fig)
        summary = "\n".join(
            f"- {name}: min second difference {c['min_second_difference']:.3e} at w = "
            f"{c['at_weight']:.2f}, convex: {c['convex']}" for name, c in check.items()
        )
        writer.add_text("story/convexity", summary)

    for name, c in check.items():
        verdict = "convex" if c["convex"] else (
            f"NOT convex ({c['negative_count']} negative second differences)")
        print(f"{name:>8}: min second difference {c['min_second_difference']:+.3e} "
              f"at w = {c['at_weight']:+.2f} -> {verdict}")
    for path in paths.values():
        print(f"wrote {path}")
    print(f"TensorBoard run: {args.logdir} (see it with: tensorboard --logdir "
          f"{args.logdir.parent})")
    return {"paths": paths, "logdir": args.logdir, "convexity": check}


if __name__ == "__main__":
    main()
