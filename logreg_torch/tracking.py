"""TensorBoard logging behind one small interface (the figures it logs: logreg_torch.figures).

Tags are hierarchical (``train/loss``, ``val/accuracy``, ``weights/linear.weight``) so
TensorBoard groups them; Time Series sorts the groups by name, so ``train`` and ``val`` come
before ``weights``. Only the main process writes: other ranks build the logger with
``enabled=False`` and every call is a no-op (no folder, no file).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.util
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from torch import Tensor, nn

from logreg_torch.event_records import merged, use_fast_crc
from logreg_torch.histograms import buckets
from logreg_torch.interrupts import critical

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


# What the HParams tab shows: the settings that tell one run of this project from another.
# Every config key would bury them under the synthetic generator's knobs and chunk sizes; the
# whole resolved config is in the Text tab. Every run writes the same names (TensorBoard takes
# the column list from one run's experiment summary and applies it to all).
RUN_HPARAMS = ("data.source", "data.path", "model.name", "model.hidden", "optim.name",
               "optim.lr", "loss.l2", "loss.l1", "loss.pos_weight", "train.batch_size",
               "train.epochs", "train.precision")
# The HParams tab ticks the first five hparam columns; TensorBoard sorts those marked
# "differs" first, each group by name: these five, as data.source, loss.l2, model.name,
# optim.lr, optim.name.
SHOWN_HPARAMS = ("data.source", "model.name", "optim.name", "optim.lr", "loss.l2")


def run_hparams(config: Mapping[str, Any] | Any) -> dict[str, HParamValue]:
    """The ``RUN_HPARAMS`` of a (nested) config, flattened (``None`` becomes ``"None"``)."""
    flat = flatten_hparams(config)
    return {key: flat[key] for key in RUN_HPARAMS if key in flat}


def _uncut(method: Callable) -> Callable:
    """Ctrl-C waits for the writer call to finish: cut inside SummaryWriter, it can leave its
    background thread writing to a file already closed. The call's seconds count as the
    logger's ``events`` (``log_figure``'s: ``figures``)."""
    part = "figures" if method.__name__ in ("log_figure", "log_image", "log_png") else "events"

    @functools.wraps(method)
    def wrapper(self: TensorBoardLogger, *args: Any, **kwargs: Any) -> Any:
        with critical(), self.timed(part):
            return method(self, *args, **kwargs)

    return wrapper


class TensorBoardLogger:
    """Writes scalars, histograms, PR curves, text, figures and hparams into one run folder.

    ``enabled=False`` (non-zero ranks) turns every method into a no-op and creates nothing.
    Usable as a context manager; ``close`` is idempotent.
    """

    def __init__(self, run_dir: str | Path, enabled: bool = True,
                 purge_step: int | None = None) -> None:
        """``purge_step`` (a resumed run: its first new step) tells TensorBoard to drop the
        points at that step and later that earlier events files in the folder hold, so that
        epochs logged after the checkpoint a resume starts from are not drawn twice."""
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self._writer = None
        # Seconds spent writing events and drawing figures: --timings' finer entries.
        self.seconds = {"events": 0.0, "figures": 0.0}
        self._timing = False
        if enabled:
            with self.timed("events"):
                # Imported here so that disabled ranks never load the tensorboard package.
                from torch.utils.tensorboard import SummaryWriter

                use_fast_crc()
                self._writer = SummaryWriter(log_dir=str(self.run_dir), purge_step=purge_step)

    @contextlib.contextmanager
    def timed(self, part: str) -> Iterator[None]:
        """Count the seconds of the block as ``part`` (``events`` or ``figures``); a block
        inside another counts once, as the outer one's."""
        if self._timing:
            yield
            return
        self._timing, started = True, time.perf_counter()
        try:
            yield
        finally:
            self.seconds[part] += time.perf_counter() - started
            self._timing = False

    @_uncut
    def log(self, tag: str, value: float | Tensor, step: int) -> None:
        """One scalar. A tensor value is read with ``float()`` (a CUDA sync)."""
        if self._writer is not None:
            self._writer.add_scalar(tag, float(value), global_step=step)

    @_uncut
    def log_dict(self, metrics: Mapping[str, float], step: int, prefix: str = "") -> None:
        """Several scalars, as one event; ``prefix="val"`` gives tags ``val/loss``,
        ``val/accuracy``, ... A tensor value is read with ``float()`` (a CUDA sync)."""
        if self._writer is None:
            return
        from torch.utils.tensorboard.summary import scalar

        prefix = prefix.rstrip("/")
        self._add(merged(scalar(f"{prefix}/{name}" if prefix else name, float(value))
                         for name, value in metrics.items()), step)

    def _add(self, summary: Any, step: int) -> None:
        if summary.value:  # an event with no value would be a record for nothing
            self._writer._get_file_writer().add_summary(summary, step)

    @_uncut
    def log_histograms(self, model: nn.Module, step: int) -> None:
        """One histogram per named parameter (weights and biases): ``weights/linear.weight``,
        all in one event.

        A parameter holding inf or NaN is skipped: TensorBoard cannot bin it ("The histogram
        is empty"), and the training loop reports such a run as diverged anyway.
        """
        if self._writer is None:
            return
        from torch.utils.tensorboard.summary import histogram_raw

        edges = np.asarray(self._writer.default_bins)  # TensorBoard's default buckets
        summaries = []
        for name, param in _unwrap(model).named_parameters():
            # float64: the bin edges of float32 values near 1e38 overflow to inf and leave
            # every bin empty.
            values = _to_numpy(param).astype(np.float64)
            if values.size and np.isfinite(values).all():
                limits, counts = buckets(values, edges)
                summaries.append(histogram_raw(
                    f"weights/{name}", values.min(), values.max(), len(values), values.sum(),
                    values.dot(values), limits, counts))
        self._add(merged(summaries), step)  # one event for all of them

    @_uncut
    def log_pr_curve(self, tag: str, probs: ArrayLike, targets: ArrayLike, step: int,
                     positive: str = "1") -> None:
        """Precision-recall curve from probabilities and 0/1 targets.

        TensorBoard's PR-curve cards draw no axis titles; the card's description says which
        axis is which and what the positive class is (the Images tab has the same curve
        drawn with titles, ``pr_curve_figure``).
        """
        if self._writer is None:
            return
        from torch.utils.tensorboard.summary import pr_curve

        summary = pr_curve(tag, _to_numpy(targets).astype(bool), _to_numpy(probs))
        metadata = summary.value[0].metadata
        metadata.display_name = f"{tag}: precision (y) against recall (x), class 1 = {positive}"
        metadata.summary_description = (
            f"Precision (y axis) against recall (x axis) for class 1 = {positive!r}, one point "
            f"per probability threshold.")
        self._writer._get_file_writer().add_summary(summary, step)

    @_uncut
    def log_text(self, tag: str, text: str, step: int = 0) -> None:
        """Markdown text (e.g. the resolved config in a code block)."""
        if self._writer is not None:
            self._writer.add_text(tag, text, global_step=step)

    @_uncut
    def log_figure(self, tag: str, figure: Figure, step: int) -> None:
        """A matplotlib figure, rendered to an image by the Agg canvas (figures.render)."""
        if self._writer is not None:
            from logreg_torch.figures import render

            self._writer.add_image(tag, render(figure), global_step=step, dataformats="CHW")

    @_uncut
    def log_image(self, tag: str, image: np.ndarray, step: int) -> None:
        """An image: uint8 RGB, channels first (CHW), as ``figures.render`` draws one."""
        if self._writer is not None:
            self._writer.add_image(tag, image, global_step=step, dataformats="CHW")

    @_uncut
    def log_png(self, tag: str, png: bytes, height: int, width: int, step: int) -> None:
        """An RGB image already encoded as PNG (``figures.encode_png``): the event
        ``log_image`` writes for the same pixels, without encoding them here."""
        if self._writer is not None:
            from tensorboard.compat.proto.summary_pb2 import Summary

            image = Summary.Image(height=height, width=width, colorspace=3,
                                  encoded_image_string=png)
            self._add(Summary(value=[Summary.Value(tag=tag, image=image)]), step)

    @_uncut
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

    @_uncut
    def log_hparams(self, hparams: Mapping[str, Any] | Any, metric_tags: Iterable[str],
                    step: int = 0, shown: Iterable[str] = SHOWN_HPARAMS,
                    descriptions: Mapping[str, str] | None = None,
                    blank: Iterable[str] = ()) -> None:
        """Hyperparameters for the HParams tab, with ``metric_tags`` as its metric columns.

        ``hparams`` may be nested (a dict, ``DictConfig`` or a dataclass); it is flattened by
        ``flatten_hparams``. ``metric_tags`` name scalar curves this run logs (``val/loss``):
        the HParams tab shows the last value of each, so no one-point ``hparam/...`` scalars
        are written (``SummaryWriter.add_hparams`` writes those, and in a second, timestamped
        sub-run that TensorBoard lists as another run). The hparams summaries go through this
        run's own events file. The tab ticks five hparam columns, those marked ``differs``
        first (TensorBoard sets it itself only for experiments it infers): ``shown`` are
        marked so; the tab lists the first five metrics of ``metric_tags`` the same way.
        ``descriptions`` (tag -> text) appear as the metric columns' tooltips. ``blank``:
        keys whose column this run shows empty (a setting it does not use); their values in
        ``hparams`` only give the column its type, so that every run writes the same columns.
        """
        if self._writer is None:
            return
        from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData
        from torch.utils.tensorboard.summary import hparams as hparams_summaries

        # torch's hparams() reads only the metric names, never the values.
        metrics = dict.fromkeys(metric_tags, 0.0)
        experiment, start, end = hparams_summaries(flatten_hparams(hparams), metrics)
        plugin = experiment.value[0].metadata.plugin_data
        data = HParamsPluginData.FromString(plugin.content)
        shown = set(shown)
        for info in data.experiment.hparam_infos:
            info.differs = info.name in shown
        for info in data.experiment.metric_infos:
            info.description = (descriptions or {}).get(info.name.tag, "")
        plugin.content = data.SerializeToString()
        plugin = start.value[0].metadata.plugin_data
        data = HParamsPluginData.FromString(plugin.content)
        for key in blank:  # no value: TensorBoard shows the cell empty
            data.session_start_info.hparams.pop(key, None)
        plugin.content = data.SerializeToString()
        file_writer = self._writer._get_file_writer()  # the one add_scalar writes through
        for summary in (experiment, start, end):
            file_writer.add_summary(summary, step)

    @_uncut
    def flush(self) -> None:
        """Write pending events to disk now."""
        if self._writer is not None:
            self._writer.flush()

    @_uncut
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
    """True when matplotlib can be imported: a dependency, looked up here so that the import
    itself waits for the first figure (and tests of tiny runs can skip the drawing)."""
    return importlib.util.find_spec("matplotlib") is not None
