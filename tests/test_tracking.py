"""tracking.py: write with the logger, read back with TensorBoard's own EventAccumulator."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing import event_accumulator as ea
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from logreg_torch.figures import (
    class_names,
    pr_curve_figure,
    precision_recall,
    probability_histogram_figure,
    reliability_figure,
)
from logreg_torch.model import MLP, LogisticRegression
from logreg_torch.tracking import TensorBoardLogger, figures_available, flatten_hparams

needs_matplotlib = pytest.mark.skipif(not figures_available(),
                                      reason="matplotlib not installed (the plots extra)")


LOAD_ALL = {ea.SCALARS: 0, ea.HISTOGRAMS: 0, ea.TENSORS: 0, ea.IMAGES: 0}


def _read(run_dir: Path) -> ea.EventAccumulator:
    return ea.EventAccumulator(str(run_dir), size_guidance=LOAD_ALL).Reload()


def _event_dirs(root: Path) -> set[Path]:
    return {p.parent for p in root.rglob("events.out.tfevents.*")}


@pytest.fixture()
def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    targets = torch.randint(0, 2, (200,), generator=g)
    probs = torch.sigmoid(2 * targets - 1 + torch.randn(200, generator=g))
    return probs, targets


@pytest.fixture()
def run(tmp_path: Path, data) -> tuple[Path, ea.EventAccumulator]:
    """One run that uses every method except figures; returns the folder and its events."""
    probs, targets = data
    run_dir = tmp_path / "run"
    with TensorBoardLogger(run_dir) as logger:
        logger.log_custom_scalars_layout()
        for step in range(3):
            logger.log_dict({"loss": 1.0 / (step + 1)}, step, prefix="train")
            logger.log_dict({"loss": 2.0 / (step + 1), "accuracy": 0.5 + 0.1 * step}, step, "val/")
            logger.log("lr", torch.tensor(0.1 * step), step)
            logger.log_histograms(LogisticRegression(3), step)
        logger.log_pr_curve("val/pr_curve", probs, targets, step=2, positive="jacket")
        logger.log_text("config", "```yaml\noptim:\n  lr: 0.1\n```")
        logger.log_hparams(
            {"optim": {"lr": 0.1, "name": "adam"}, "model": {"hidden": [64, 8]}, "seed": 0},
            ["val/loss", "val/accuracy"], shown=["optim.lr"],
            descriptions={"val/loss": "the criterion"},
        )
    return run_dir, _read(run_dir)


def test_scalars_round_trip(run) -> None:
    _, acc = run
    expected = {
        "train/loss": [1.0, 0.5, 1 / 3],
        "val/loss": [2.0, 1.0, 2 / 3],
        "val/accuracy": [0.5, 0.6, 0.7],
        "lr": [0.0, 0.1, 0.2],
    }
    for tag, values in expected.items():
        events = acc.Scalars(tag)
        assert [e.step for e in events] == [0, 1, 2], tag
        np.testing.assert_allclose([e.value for e in events], values, rtol=1e-6, err_msg=tag)


def test_histograms(run) -> None:
    _, acc = run
    assert set(acc.Tags()[ea.HISTOGRAMS]) == {"weights/linear.weight", "weights/linear.bias"}
    events = acc.Histograms("weights/linear.weight")
    assert [e.step for e in events] == [0, 1, 2]
    assert events[0].histogram_value.num == 3  # three weights


def test_histograms_unwrap_compiled_model(tmp_path: Path) -> None:
    class Compiled(torch.nn.Module):
        """Stands in for torch.compile's OptimizedModule (importing dynamo costs seconds)."""

        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self._orig_mod = inner

    with TensorBoardLogger(tmp_path) as logger:
        logger.log_histograms(Compiled(MLP(3, hidden=(4,))), 0)
    tags = set(_read(tmp_path).Tags()[ea.HISTOGRAMS])
    expected = {"net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias"}
    assert tags == {f"weights/{name}" for name in expected}


def test_histograms_skip_non_finite_parameters(tmp_path: Path) -> None:
    # TensorBoard cannot bin inf/NaN ("The histogram is empty"): such a parameter is skipped.
    model = LogisticRegression(3)
    with torch.no_grad():
        model.linear.weight.fill_(float("inf"))
    with TensorBoardLogger(tmp_path) as logger:
        logger.log_histograms(model, 0)
    assert set(_read(tmp_path).Tags()[ea.HISTOGRAMS]) == {"weights/linear.bias"}


def test_pr_curve(run) -> None:
    _, acc = run
    assert "val/pr_curve" in acc.Tags()[ea.TENSORS]
    assert "val/pr_curve" in acc.PluginTagToContent("pr_curves")
    (event,) = acc.Tensors("val/pr_curve")
    assert event.step == 2
    # TensorBoard's card has no axis titles: its title and description say which is which.
    metadata = acc.SummaryMetadata("val/pr_curve")
    assert "precision (y) against recall (x)" in metadata.display_name
    assert "jacket" in metadata.display_name and "recall (x axis)" in metadata.summary_description


def test_text(run) -> None:
    _, acc = run
    (tag,) = acc.PluginTagToContent("text")
    (event,) = acc.Tensors(tag)
    assert b"lr: 0.1" in event.tensor_proto.string_val[0]


def test_custom_scalars_layout(run) -> None:
    from tensorboard.plugins.custom_scalar import layout_pb2

    _, acc = run
    (event,) = acc.Tensors("custom_scalars__config__")
    layout = layout_pb2.Layout.FromString(event.tensor_proto.string_val[0])
    (category,) = layout.category
    (chart,) = category.chart
    assert chart.title == "loss"
    assert list(chart.multiline.tag) == ["train/loss", "val/loss"]


def test_hparams(run) -> None:
    _, acc = run
    content = acc.PluginTagToContent("hparams")
    assert set(content) == {
        "_hparams_/experiment",
        "_hparams_/session_start_info",
        "_hparams_/session_end_info",
    }
    start = HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hp = start.session_start_info.hparams
    assert hp["optim.lr"].number_value == pytest.approx(0.1)
    assert hp["optim.name"].string_value == "adam"
    assert hp["model.hidden"].string_value == "[64, 8]"
    assert hp["seed"].number_value == 0
    experiment = HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    # The metric columns are curves the run logs; no one-point hparam/... scalars are added.
    assert [m.name.tag for m in experiment.metric_infos] == ["val/loss", "val/accuracy"]
    assert experiment.metric_infos[0].description == "the criterion"
    assert not [t for t in acc.Tags()[ea.SCALARS] if t.startswith("hparam")]
    assert len(acc.Scalars("val/loss")) == 3
    # "differs" puts a column among the five the HParams tab ticks.
    assert {h.name: h.differs for h in experiment.hparam_infos} == {
        "optim.lr": True, "optim.name": False, "model.hidden": False, "seed": False}


def test_run_hparams_are_the_same_short_list_for_every_config() -> None:
    from logreg_torch.config import Config
    from logreg_torch.tracking import RUN_HPARAMS, SHOWN_HPARAMS, run_hparams

    hp = run_hparams(dataclasses.asdict(Config()))
    assert tuple(hp) == RUN_HPARAMS and set(SHOWN_HPARAMS) <= set(hp)
    assert hp["data.path"] == "None" and hp["optim.lr"] == Config().optim.lr


def test_exactly_one_run_folder(run) -> None:
    run_dir, _ = run
    assert _event_dirs(run_dir.parent) == {run_dir}
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1
    assert not [p for p in run_dir.iterdir() if p.is_dir()]


def _texts(fig) -> list[str]:
    ax = fig.axes[0]
    return [ax.get_xlabel(), ax.get_ylabel(), ax.get_title(),
            *(t.get_text() for t in ax.get_legend().get_texts())]


@needs_matplotlib
def test_figures(tmp_path: Path, data) -> None:
    probs, targets = data
    names = class_names({"cardigan": 0, "jacket": 1})
    assert names == ("cardigan", "jacket") and class_names(None) == ("0", "1")
    with TensorBoardLogger(tmp_path) as logger:
        logger.log_figure("val/reliability", reliability_figure(probs, targets, names=names), 1)
        logger.log_figure("val/probs", probability_histogram_figure(probs.numpy(), targets,
                                                                     names), 1)
        logger.log_figure("val/pr", pr_curve_figure(probs, targets, names), 1)
    acc = _read(tmp_path)
    assert set(acc.Tags()[ea.IMAGES]) == {"val/reliability", "val/probs", "val/pr"}
    (image,) = acc.Images("val/reliability")
    assert image.step == 1 and image.width > 100 and image.height > 100
    assert image.encoded_image_string.startswith(b"\x89PNG")



@needs_matplotlib
def test_a_png_logged_as_is_reads_back_as_the_image_log_image_writes(tmp_path: Path,
                                                                      data) -> None:
    from logreg_torch.figures import encode_png, render

    image = render(reliability_figure(*data))
    with TensorBoardLogger(tmp_path) as logger:
        logger.log_image("val/a", image, 2)
        logger.log_png("val/b", encode_png(image), image.shape[1], image.shape[2], 2)
    acc = _read(tmp_path)
    (a,), (b,) = acc.Images("val/a"), acc.Images("val/b")
    assert (a.step, a.width, a.height, a.encoded_image_string) == (
        b.step, b.width, b.height, b.encoded_image_string)
    assert (b.height, b.width) == image.shape[1:]

def test_figures_name_the_classes_and_their_axes(data) -> None:
    probs, targets = data
    names = ("cardigan", "jacket")
    rel = _texts(reliability_figure(probs, targets, names=names))
    assert "predicted probability of 'jacket'" in rel[0] and "fraction of positives" in rel[1]
    # The line's legend says what it plots: fraction of positives at the mean probability.
    assert any("fraction of positives at" in t and "mean predicted probability" in t
               for t in rel[3:])
    hist = _texts(probability_histogram_figure(probs, targets, names))
    assert "true class 0: cardigan" in hist and "true class 1: jacket" in hist
    pr = _texts(pr_curve_figure(probs, targets, names))
    assert pr[0].startswith("recall") and pr[1].startswith("precision") and "jacket" in pr[2]


def test_precision_recall_matches_scikit_learn(data) -> None:
    from sklearn.metrics import precision_recall_curve

    probs, targets = data
    probs = torch.round(probs, decimals=1)  # ties
    precision, recall = precision_recall(probs, targets)
    ref_p, ref_r, _ = precision_recall_curve(targets.numpy(), probs.numpy())
    # scikit-learn lists thresholds lowest first and ends on (recall 0, precision 1).
    np.testing.assert_allclose(precision, ref_p[:-1][::-1])
    np.testing.assert_allclose(recall, ref_r[:-1][::-1])


CURVE = "fraction of positives at the bin's\nmean predicted probability"


def _reliability_content(fig) -> dict:
    """What the reliability figure draws: axis texts, the bars and the curve through the bins."""
    (ax,) = fig.axes
    lines = {line.get_label(): line for line in ax.get_lines()}
    bars = ax.patches
    return {"title": ax.get_title(), "x": ax.get_xlabel(), "y": ax.get_ylabel(),
            "diagonal": (list(lines["perfectly calibrated"].get_xdata()),
                         list(lines["perfectly calibrated"].get_ydata())),
            "mean_prob": np.asarray(lines[CURVE].get_xdata(), float),
            "frac_pos": np.asarray(lines[CURVE].get_ydata(), float),
            "bar_left": np.array([b.get_x() for b in bars]),
            "bar_width": np.array([b.get_width() for b in bars]),
            "bar_height": np.array([b.get_height() for b in bars])}


@needs_matplotlib
def test_reliability_figure_draws_the_reliability_curve() -> None:
    from sklearn.calibration import calibration_curve

    rng = np.random.default_rng(3)
    probs = rng.beta(2, 2, 600)  # continuous: no probability on a bin edge
    targets = (rng.random(600) < probs ** 1.3).astype(np.int64)  # a miscalibrated model
    fig = reliability_figure(torch.tensor(probs), torch.tensor(targets))
    got = _reliability_content(fig)
    probs = probs.astype(np.float32).astype(np.float64)  # figures take tensors as float32
    assert got["title"] == "Reliability (15 bins, n = 600)"
    assert (got["x"], got["y"]) == ("predicted probability of '1'",
                                    "fraction of positives (true '1')")
    assert got["diagonal"] == ([0, 1], [0, 1])
    # scikit-learn's reliability curve over the same 15 uniform bins (empty bins left out).
    frac_pos, mean_prob = calibration_curve(targets, probs, n_bins=15, strategy="uniform")
    np.testing.assert_allclose(got["mean_prob"], mean_prob, rtol=0, atol=1e-12)
    np.testing.assert_allclose(got["frac_pos"], frac_pos, rtol=0, atol=1e-12)
    # One bar per filled bin, from the bin's left edge, 1/15 wide, as high as its fraction.
    filled = np.unique(np.minimum((probs * 15).astype(int), 14))
    np.testing.assert_allclose(got["bar_left"], filled / 15, atol=1e-12)
    np.testing.assert_allclose(got["bar_width"], 1 / 15, atol=1e-12)
    np.testing.assert_allclose(got["bar_height"], frac_pos, atol=1e-12)
    # Negative control: the same check against 10 bins fails.
    frac10, mean10 = calibration_curve(targets, probs, n_bins=10, strategy="uniform")
    assert len(mean10) != len(got["mean_prob"]) or not np.allclose(got["mean_prob"], mean10)


@needs_matplotlib
def test_reliability_figure_edge_probabilities() -> None:
    # 0.0 and 1.0 land in the first and last bins (right-closed, as the ece metric bins),
    # 0.5 in bin 7; the other bins are empty and drawn as nothing.
    fig = reliability_figure(torch.tensor([0.0, 1.0, 1.0, 0.5]), torch.tensor([0, 1, 1, 0]))
    got = _reliability_content(fig)
    np.testing.assert_allclose(got["bar_left"], [0, 7 / 15, 14 / 15], atol=1e-12)
    np.testing.assert_allclose(got["mean_prob"], [0.0, 0.5, 1.0])
    np.testing.assert_allclose(got["frac_pos"], [0.0, 0.0, 1.0])


@needs_matplotlib
def test_probability_histogram_figure_counts_each_class() -> None:
    rng = np.random.default_rng(4)
    probs, targets = rng.random(300), rng.integers(0, 2, 300)
    (ax,) = probability_histogram_figure(probs, targets).axes
    assert ax.get_title() == "Predicted probabilities by true class"
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("predicted probability of '1' (class 1)",
                                                  "count")
    edges = np.linspace(0, 1, 21)
    bars = ax.patches
    assert len(bars) == 40  # 20 bins for each class
    for cls, drawn in ((0, bars[:20]), (1, bars[20:])):
        counts, _ = np.histogram(probs[targets == cls], bins=edges)
        assert [b.get_height() for b in drawn] == counts.tolist(), cls
        np.testing.assert_allclose([b.get_x() for b in drawn], edges[:-1], atol=1e-12)
    assert sum(b.get_height() for b in bars) == 300
    (threshold,) = [line for line in ax.get_lines() if line.get_label() == "threshold 0.5"]
    assert list(threshold.get_xdata()) == [0.5, 0.5]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "true class 0: 0", "true class 1: 1", "threshold 0.5"]


def test_disabled_logger_writes_nothing(tmp_path: Path, data) -> None:
    probs, targets = data
    run_dir = tmp_path / "rank1"
    logger = TensorBoardLogger(run_dir, enabled=False)
    logger.log("x", 1.0, 0)
    logger.log_dict({"loss": 1.0}, 0, prefix="train")
    logger.log_histograms(LogisticRegression(2), 0)
    logger.log_pr_curve("pr", probs, targets, 0)
    logger.log_text("t", "text")
    logger.log_figure("f", None, 0)  # never touched when disabled
    logger.log_custom_scalars_layout()
    logger.log_hparams({"lr": 0.1}, ["loss"])
    logger.flush()
    logger.close()
    assert not run_dir.exists()
    assert list(tmp_path.iterdir()) == []


def test_close_is_idempotent(tmp_path: Path) -> None:
    logger = TensorBoardLogger(tmp_path)
    logger.log("x", 1.0, 0)
    logger.close()
    logger.close()
    logger.log("x", 2.0, 1)  # after close: ignored, no new file
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 1


@dataclasses.dataclass
class _Section:
    lr: float = 0.05
    hidden: list[int] = dataclasses.field(default_factory=lambda: [64])


def test_flatten_hparams() -> None:
    flat = flatten_hparams(
        {
            "a": {"b": 1, "c": {"d": "x"}},
            "lst": [1, 2],
            "none": None,
            "np": np.float32(0.5),
            "t": torch.tensor(3),
            "flag": True,
            "path": Path("runs/x"),
            "dc": _Section(),
        }
    )
    assert flat == {
        "a.b": 1,
        "a.c.d": "x",
        "lst": "[1, 2]",
        "none": "None",
        "np": 0.5,
        "t": 3,
        "flag": True,
        "path": "runs/x",
        "dc.lr": 0.05,
        "dc.hidden": "[64]",
    }
    assert all(isinstance(v, (str, float, int, bool)) for v in flat.values())


def test_histograms_of_huge_float32_weights(tmp_path: Path) -> None:
    # float32 weights near 1e38: binned in float64, or every bin comes out empty.
    model = LogisticRegression(3)
    with torch.no_grad():
        model.linear.weight.copy_(torch.tensor([[-3e38, 1.0, 3e38]]))
    with TensorBoardLogger(tmp_path) as logger:
        logger.log_histograms(model, 0)
    (event,) = _read(tmp_path).Histograms("weights/linear.weight")
    assert event.histogram_value.num == 3
