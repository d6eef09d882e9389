"""TensorBoard logging behind one small interface, plus matplotlib figure builders.

Tags are hierarchical (``train/loss``, ``val/accuracy``, ``params/linear.weight``) so TensorBoard
groups them. Only the main process writes: other ranks build the logger with ``enabled=False``
and every call is a no-op (no folder, no file). matplotlib is optional and imported only by the
figure builders.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from torch import Tensor, nn

if TYPE_CHECKING:
    from matplotlib.figure import Figure

ArrayLike = Tensor | np.ndarray
HParamValue = str | float | int | bool


def _to_numpy(x: ArrayLike) -> np.ndarray:
    if isinstance(x, Tensor):
        # float() first: numpy has no bfloat16.
        x = x.detach()
        x = x.float() if x.is_floating_point() else x
        return x.cpu().numpy().reshape(-1)
    return np.asarray(x).reshape(-1)


def _unwrap(model: nn.Module) -> nn.Module:
    """The user's module inside torch.compile / DDP wrappers, so tags keep the plain names."""
    model = getattr(model, "_orig_mod", model)  # torch.compile
    if isinstance(model, nn.parallel.DistributedDataParallel):
        model = model.module
    return getattr(model, "_orig_mod", model)  # DDP(compile(model))


def _as_mapping(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


def flatten_hparams(hparams: Mapping[str, Any] | Any, prefix: str = "") -> dict[str, HParamValue]:
    """Nested mapping -> ``{"optim.lr": 0.05, "model.hidden": "[64]", ...}``.

    TensorBoard's hparams plugin takes only str / float / int / bool values: nested mappings
    (dicts, OmegaConf ``DictConfig``, dataclass instances such as ``Config``) become dotted
    keys, numpy and one-element tensor scalars become Python numbers, everything else (lists,
    None, paths) becomes its ``str``. (torch records bools as numbers 1/0.)
    """
    flat: dict[str, HParamValue] = {}
    for key, value in _as_mapping(hparams).items():
        name = f"{prefix}{key}"
        value = _as_mapping(value)
        if isinstance(value, Mapping):
            flat.update(flatten_hparams(value, prefix=f"{name}."))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        elif isinstance(value, np.generic) or (isinstance(value, Tensor) and value.numel() == 1):
            flat[name] = value.item()
        else:
            flat[name] = str(value)
    return flat


class TensorBoardLogger:
    """Writes scalars, histograms, PR curves, text, figures and hparams into one run folder.

    ``enabled=False`` (non-zero ranks) turns every method into a no-op and creates nothing.
    Usable as a context manager; ``close`` is idempotent.
    """

    def __init__(self, run_dir: str | Path, enabled: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self._writer = None
        if enabled:
            # Imported here so that disabled ranks never load the tensorboard package.
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.run_dir))

    def log(self, tag: str, value: float | Tensor, step: int) -> None:
        """One scalar. A tensor value is read with ``float()`` (a CUDA sync)."""
        if self._writer is not None:
            self._writer.add_scalar(tag, float(value), global_step=step)

    def log_dict(self, metrics: Mapping[str, float], step: int, prefix: str = "") -> None:
        """Several scalars; ``prefix="val"`` gives tags ``val/loss``, ``val/accuracy``, ..."""
        if self._writer is None:
            return
        prefix = prefix.rstrip("/")
        for name, value in metrics.items():
            self.log(f"{prefix}/{name}" if prefix else name, value, step)

    def log_histograms(self, model: nn.Module, step: int) -> None:
        """One histogram per named parameter (weights and biases): ``params/linear.weight``."""
        if self._writer is None:
            return
        for name, param in _unwrap(model).named_parameters():
            self._writer.add_histogram(f"params/{name}", _to_numpy(param), global_step=step)

    def log_pr_curve(self, tag: str, probs: ArrayLike, targets: ArrayLike, step: int) -> None:
        """Precision-recall curve from probabilities and 0/1 targets."""
        if self._writer is not None:
            self._writer.add_pr_curve(
                tag, _to_numpy(targets).astype(bool), _to_numpy(probs), global_step=step
            )

    def log_text(self, tag: str, text: str, step: int = 0) -> None:
        """Markdown text (e.g. the resolved config in a code block)."""
        if self._writer is not None:
            self._writer.add_text(tag, text, global_step=step)

    def log_figure(self, tag: str, figure: Figure, step: int) -> None:
        """A matplotlib figure, rendered to an image; the figure is closed afterwards."""
        if self._writer is not None:
            self._writer.add_figure(tag, figure, global_step=step, close=True)

    def log_custom_scalars_layout(
        self, charts: Mapping[str, list[str]] | None = None, category: str = "curves"
    ) -> None:
        """Charts drawing several scalar tags together; default: ``loss`` = train/loss + val/loss.

        TensorBoard keeps one layout per run: call this once.
        """
        if self._writer is None:
            return
        charts = charts if charts is not None else {"loss": ["train/loss", "val/loss"]}
        layout = {category: {name: ["Multiline", list(tags)] for name, tags in charts.items()}}
        self._writer.add_custom_scalars(layout)

    def log_hparams(
        self, hparams: Mapping[str, Any] | Any, metrics: Mapping[str, float], step: int = 0
    ) -> None:
        """Hyperparameters and final metrics for the HParams tab, in this run's own folder.

        ``hparams`` may be nested (a dict, ``DictConfig`` or the ``Config`` dataclass); it is
        flattened by ``flatten_hparams``.

        ``SummaryWriter.add_hparams`` would open a second writer in a timestamped sub-folder,
        which TensorBoard shows as a separate run; instead the three hparams summaries go
        through this run's file writer. Metrics are written as scalars tagged
        ``hparam/<name>`` so they do not add points to the training curves (``val/loss``).
        """
        if self._writer is None:
            return
        from torch.utils.tensorboard.summary import hparams as hparams_summaries

        metric_tags = {
            (name if name.startswith("hparam/") else f"hparam/{name}"): float(value)
            for name, value in metrics.items()
        }
        experiment, start, end = hparams_summaries(flatten_hparams(hparams), metric_tags)
        # The writer's own file writer (what add_scalar uses): same events file, same folder.
        file_writer = self._writer._get_file_writer()
        for summary in (experiment, start, end):
            file_writer.add_summary(summary, step)
        for tag, value in metric_tags.items():
            self._writer.add_scalar(tag, value, global_step=step)

    def flush(self) -> None:
        """Write pending events to disk now."""
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        """Flush and close the events file; later calls are no-ops."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> TensorBoardLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def figures_available() -> bool:
    """True when matplotlib is installed (figures are optional)."""
    return importlib.util.find_spec("matplotlib") is not None


def _new_figure(figsize: tuple[float, float]) -> Figure:
    # matplotlib.figure.Figure, not pyplot: no global figure registry to leak from, and no
    # GUI backend needed on a headless machine.
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout="constrained")


def reliability_figure(probs: ArrayLike, targets: ArrayLike, n_bins: int = 15) -> Figure:
    """Reliability diagram: fraction of positives against mean predicted probability per bin.

    Bins are those of the ``ece`` metric: ``linspace(0, 1, n_bins + 1)``, right-closed
    bucketing as torchmetrics does (a probability of exactly 1.0 is drawn in the top bin).
    """
    p = _to_numpy(probs).astype(np.float64)
    t = _to_numpy(targets).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    filled = count > 0
    mean_prob = np.bincount(idx, weights=p, minlength=n_bins)[filled] / count[filled]
    frac_pos = np.bincount(idx, weights=t, minlength=n_bins)[filled] / count[filled]

    fig = _new_figure((5.0, 5.0))
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--", color="gray", label="perfectly calibrated")
    ax.bar(
        edges[:-1][filled],
        frac_pos,
        width=1.0 / n_bins,
        align="edge",
        edgecolor="black",
        alpha=0.6,
        label="fraction of positives",
    )
    ax.plot(mean_prob, frac_pos, "o-", color="C1", label="bin mean probability")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("predicted probability")
    ax.set_ylabel("fraction of positives")
    ax.set_title(f"Reliability ({n_bins} bins, n = {p.size})")
    ax.legend(loc="upper left")
    return fig


def probability_histogram_figure(probs: ArrayLike, targets: ArrayLike) -> Figure:
    """Histograms of predicted probabilities, one per true class, with the 0.5 threshold."""
    p = _to_numpy(probs).astype(np.float64)
    t = _to_numpy(targets)
    bins = np.linspace(0.0, 1.0, 21)
    fig = _new_figure((6.0, 4.0))
    ax = fig.add_subplot()
    for cls, color in ((0, "C0"), (1, "C3")):
        ax.hist(p[t == cls], bins=bins, alpha=0.6, color=color, label=f"true class {cls}")
    ax.axvline(0.5, color="black", linestyle="--", linewidth=1, label="threshold 0.5")
    ax.set_xlim(0, 1)
    ax.set_xlabel("predicted probability P(y = 1)")
    ax.set_ylabel("count")
    ax.set_title("Predicted probabilities by true class")
    ax.legend()
    return fig
