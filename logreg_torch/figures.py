"""The end-of-run figures, drawn with matplotlib's Agg canvas: no pyplot, no GUI backend.

A figure is a ``matplotlib.figure.Figure`` (no global figure registry to leak from) and
``render`` turns it into the CHW array TensorBoard's image summary takes, as
``SummaryWriter.add_figure`` does but without its ``import matplotlib.pyplot`` (which also picks
an interactive backend where one exists). matplotlib itself is imported by the first figure.
torch is not imported here: ``logreg_torch.figure_worker`` draws in a process without it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

ArrayLike = Any  # a torch Tensor or anything numpy takes


def _to_numpy(x: ArrayLike) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch Tensor
        # float() first: numpy has no bfloat16.
        x = x.detach()
        x = x.float() if x.is_floating_point() else x
        return x.cpu().numpy().reshape(-1)
    return np.asarray(x).reshape(-1)


FIGURE_TAGS = ("val/reliability", "val/probability_histogram", "val/precision_recall")


def draw(tag: str, probs: ArrayLike, targets: ArrayLike, names: Sequence[str]) -> np.ndarray:
    """The validation figure ``tag`` (one of ``FIGURE_TAGS``) as a CHW image."""
    if tag == "val/reliability":
        return render(reliability_figure(probs, targets, names=names))
    if tag == "val/probability_histogram":
        return render(probability_histogram_figure(probs, targets, names))
    return render(pr_curve_figure(probs, targets, names))


def draw_all(probs: ArrayLike, targets: ArrayLike,
             names: Sequence[str]) -> list[tuple[str, np.ndarray]]:
    """The three validation figures as (tag, CHW image): reliability, probability
    histograms, precision-recall."""
    return [(tag, draw(tag, probs, targets, names)) for tag in FIGURE_TAGS]


def draw_png(tag: str, probs: ArrayLike, targets: ArrayLike,
             names: Sequence[str]) -> tuple[int, int, bytes]:
    """The validation figure ``tag`` as (height, width, PNG bytes): what an image event holds."""
    image = draw(tag, probs, targets, names)
    return image.shape[1], image.shape[2], encode_png(image)


def encode_png(image: np.ndarray) -> bytes:
    """A CHW uint8 RGB image as PNG, byte for byte what ``SummaryWriter.add_image`` writes for
    it (torch's ``make_image``: PIL's encoder, default settings; a test holds them equal)."""
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(np.moveaxis(image, 0, 2))).save(out, format="PNG")
    return out.getvalue()


def render(figure: Figure) -> np.ndarray:
    """The figure drawn by the Agg canvas: uint8 RGB, channels first (CHW), exactly the
    array ``SummaryWriter.add_figure`` would log."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    w, h = canvas.get_width_height()
    rgba = np.frombuffer(canvas.buffer_rgba(), dtype=np.uint8).reshape(h, w, 4)
    return np.ascontiguousarray(np.moveaxis(rgba[:, :, :3], 2, 0))


def _new_figure(figsize: tuple[float, float]) -> Figure:
    # matplotlib.figure.Figure, not pyplot: no global figure registry to leak from, and no
    # GUI backend needed on a headless machine.
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout="constrained")


def class_names(label_map: Mapping[str, int] | None) -> tuple[str, str]:
    """("cardigan", "jacket") from a checkpoint's label map ({"cardigan": 0, "jacket": 1});
    ("0", "1") without one."""
    names = ["0", "1"]
    for label, cls in (label_map or {}).items():
        names[int(cls)] = str(label)
    return names[0], names[1]


def _binned(p: np.ndarray, t: np.ndarray, n_bins: int):
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    filled = count > 0
    mean_prob = np.bincount(idx, weights=p, minlength=n_bins)[filled] / count[filled]
    frac_pos = np.bincount(idx, weights=t, minlength=n_bins)[filled] / count[filled]
    return edges, filled, mean_prob, frac_pos


def reliability_figure(probs: ArrayLike, targets: ArrayLike, n_bins: int = 15,
                       names: Sequence[str] = ("0", "1")) -> Figure:
    """Reliability diagram: per bin of predicted probability, the fraction of positives.

    Bins are those of the ``ece`` metric: ``linspace(0, 1, n_bins + 1)``, right-closed
    bucketing as torchmetrics does (a probability of exactly 1.0 is drawn in the top bin).
    Bars span each bin; the dots sit at the bin's mean predicted probability. ``names`` are
    the class labels (0, 1), e.g. ``("cardigan", "jacket")``.
    """
    p = _to_numpy(probs).astype(np.float64)
    t = _to_numpy(targets).astype(np.float64)
    edges, filled, mean_prob, frac_pos = _binned(p, t, n_bins)
    positive = names[1]

    fig = _new_figure((5.0, 5.0))
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--", color="gray", label="perfectly calibrated")
    ax.bar(edges[:-1][filled], frac_pos, width=1.0 / n_bins, align="edge", edgecolor="black",
           alpha=0.6, label="fraction of positives, per bin")
    ax.plot(mean_prob, frac_pos, "o-", color="C1",
            label="fraction of positives at the bin's\nmean predicted probability")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel(f"predicted probability of {positive!r}")
    ax.set_ylabel(f"fraction of positives (true {positive!r})")
    ax.set_title(f"Reliability ({n_bins} bins, n = {p.size})")
    ax.legend(loc="upper left", fontsize="small")
    return fig


def probability_histogram_figure(probs: ArrayLike, targets: ArrayLike,
                                 names: Sequence[str] = ("0", "1")) -> Figure:
    """Histograms of predicted probabilities, one per true class, with the 0.5 threshold."""
    p = _to_numpy(probs).astype(np.float64)
    t = _to_numpy(targets)
    bins = np.linspace(0.0, 1.0, 21)
    fig = _new_figure((6.0, 4.0))
    ax = fig.add_subplot()
    for cls, color in ((0, "C0"), (1, "C3")):
        ax.hist(p[t == cls], bins=bins, alpha=0.6, color=color,
                label=f"true class {cls}: {names[cls]}")
    ax.axvline(0.5, color="black", linestyle="--", linewidth=1, label="threshold 0.5")
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"predicted probability of {names[1]!r} (class 1)")
    ax.set_ylabel("count")
    ax.set_title("Predicted probabilities by true class")
    ax.legend()
    return fig


def precision_recall(probs: ArrayLike, targets: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """(precision, recall) at every distinct probability threshold, highest first; no
    positives gives recall 0."""
    p = _to_numpy(probs).astype(np.float64)
    t = _to_numpy(targets).astype(np.float64)
    order = np.argsort(-p, kind="stable")
    p, t = p[order], t[order]
    last = np.r_[np.flatnonzero(np.diff(p)), p.size - 1]  # the last row of each tie
    tp = np.cumsum(t)[last]
    precision = tp / (last + 1)
    recall = tp / max(t.sum(), 1.0)
    return precision, recall


def pr_curve_figure(probs: ArrayLike, targets: ArrayLike,
                    names: Sequence[str] = ("0", "1")) -> Figure:
    """Precision against recall for class 1 (``names[1]``), with the positives' base rate."""
    precision, recall = precision_recall(probs, targets)
    base = float(_to_numpy(targets).astype(np.float64).mean()) if precision.size else 0.0
    fig = _new_figure((5.0, 4.5))
    ax = fig.add_subplot()
    ax.step(np.r_[0.0, recall], np.r_[1.0, precision], where="post", color="C0",
            label="model")
    ax.axhline(base, color="gray", linestyle="--", label=f"always {names[1]!r} ({base:.2f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(f"recall (share of true {names[1]!r} found)")
    ax.set_ylabel(f"precision (share of predicted {names[1]!r} that are)")
    ax.set_title(f"Precision-recall, positive class {names[1]!r}")
    ax.legend(loc="lower left")
    return fig
