"""What ``fit`` leaves in a run folder, read back the way people read it.

First with TensorBoard's own ``EventAccumulator``, then through a real ``tensorboard`` server
over HTTP (runs list, scalars, the HParams tab's endpoints).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from tensorboard.backend.event_processing import event_accumulator as ea
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from logreg_torch.config import load_config
from logreg_torch.report import HPARAM_METRICS
from logreg_torch.tracking import RUN_HPARAMS, figures_available
from logreg_torch.train import FitResult, fit

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "default.yaml"
EPOCHS = 3
VAL_METRICS = ("log_loss", "accuracy", "precision", "recall", "f1", "roc_auc",
               "average_precision", "brier", "ece")
# history key -> tag
SCALAR_TAGS = {"train/loss": "train/loss", "val/loss": "val/loss",
               **{f"val/{m}": f"val/{m}" for m in VAL_METRICS}, "lr": "train/lr",
               "grad_norm": "weights/grad_norm"}
PARAMS = ("weights/linear.weight", "weights/linear.bias")
LOAD_ALL = {ea.SCALARS: 0, ea.HISTOGRAMS: 0, ea.TENSORS: 0, ea.IMAGES: 0}


def approx(value: float) -> object:
    # Event files store scalars as float32.
    return pytest.approx(value, rel=1e-6, abs=1e-6)


def _fit(run_dir: Path, *overrides: str) -> FitResult:
    cfg = load_config(CONFIG, [f"log.run_dir={run_dir}", f"train.epochs={EPOCHS}",
                               "data.test_fraction=0.2", *overrides])
    return fit(cfg)


def _read(run_dir: Path) -> ea.EventAccumulator:
    return ea.EventAccumulator(str(run_dir), size_guidance=LOAD_ALL).Reload()


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> FitResult:
    """One tiny run in ``<tmp>/runs/run``; nothing else under ``runs``."""
    return _fit(tmp_path_factory.mktemp("runs") / "run")


def test_run_folder_holds_every_summary(result: FitResult) -> None:
    run_dir, history = result.run_dir, result.history
    assert [int(r["epoch"]) for r in history] == [1, 2, 3]
    acc = _read(run_dir)

    # Per-epoch scalars: the values of FitResult.history, at steps 1..3.
    assert set(acc.Tags()[ea.SCALARS]) == set(SCALAR_TAGS.values())
    for key, tag in SCALAR_TAGS.items():
        events = acc.Scalars(tag)
        assert [e.step for e in events] == [1, 2, 3], tag
        assert [e.value for e in events] == [approx(r[key]) for r in history], tag

    # Weight and bias histograms at every epoch (log.histogram_every defaults to 1).
    assert set(acc.Tags()[ea.HISTOGRAMS]) == set(PARAMS)
    for tag in PARAMS:
        assert [e.step for e in acc.Histograms(tag)] == [1, 2, 3], tag

    # Precision-recall curve of the final model on the validation split.
    assert "val/pr_curve" in acc.PluginTagToContent("pr_curves")
    (pr,) = acc.Tensors("val/pr_curve")
    assert pr.step == EPOCHS

    # The resolved config, how the run ended and the test metrics, as text.
    texts = {tag.split("/")[0]: acc.Tensors(tag)[0].tensor_proto.string_val[0]
             for tag in acc.PluginTagToContent("text")}
    assert set(texts) == {"config", "ending", "test_metrics"}
    assert b"optim" in texts["config"]
    assert texts["ending"].startswith(b"finished 3 epochs")
    assert f"{result.test['roc_auc']:.4f}".encode() in texts["test_metrics"]

    # Custom scalars: train and val loss on one chart.
    (layout_event,) = acc.Tensors("custom_scalars__config__")
    layout = layout_pb2.Layout.FromString(layout_event.tensor_proto.string_val[0])
    charts = [c for cat in layout.category for c in cat.chart]
    assert ["train/loss", "val/loss"] in [list(c.multiline.tag) for c in charts]

    # HParams: the settings that tell runs apart, and curves of this run as its metrics.
    content = acc.PluginTagToContent("hparams")
    start = HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hp = start.session_start_info.hparams
    # Adam for 3 epochs: "finished", with no solver iterations or gradient to report.
    assert set(hp) == set(RUN_HPARAMS) | {"ending.kind"}
    assert hp["ending.kind"].string_value == "finished"
    assert hp["optim.lr"].number_value == approx(0.05)
    assert hp["optim.name"].string_value == "adam"
    assert hp["data.source"].string_value == "jackets"
    assert hp["train.epochs"].number_value == EPOCHS
    experiment = HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert [m.name.tag for m in experiment.metric_infos] == list(HPARAM_METRICS)
    assert set(HPARAM_METRICS) <= set(acc.Tags()[ea.SCALARS])

    # One run: a single events file, in the run folder itself (no timestamped sub-run).
    events_files = list(run_dir.parent.rglob("events.out.tfevents.*"))
    assert [p.parent for p in events_files] == [run_dir]


@pytest.mark.skipif(not figures_available(),
                    reason="matplotlib not installed (the plots extra; CI installs it)")
def test_run_folder_holds_the_figures(result: FitResult) -> None:
    # A reliability diagram and the probability histograms of the final model, at the last
    # epoch, as PNG images TensorBoard can show (their content: tests/test_tracking.py).
    acc = _read(result.run_dir)
    assert set(acc.Tags()[ea.IMAGES]) == {"val/reliability", "val/probability_histogram",
                                          "val/precision_recall"}
    for tag in acc.Tags()[ea.IMAGES]:
        (image,) = acc.Images(tag)
        assert image.step == EPOCHS and image.encoded_image_string.startswith(b"\x89PNG")
        assert image.width >= 300 and image.height >= 300, (tag, image.width, image.height)


def test_histogram_every(tmp_path: Path) -> None:
    run_dir = _fit(tmp_path / "run", "log.histogram_every=2").run_dir
    acc = _read(run_dir)
    for tag in PARAMS:
        assert [e.step for e in acc.Histograms(tag)] == [2], tag


# ----------------------------------------------------------------------------- HTTP


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# No proxy: the server is on this machine, whatever http_proxy says.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _get(url: str, body: dict | None = None) -> object:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with _OPENER.open(request, timeout=10) as response:
        return json.loads(response.read())


def test_tensorboard_server_shows_the_run(result: FitResult, tmp_path: Path) -> None:
    logdir, run = result.run_dir.parent, result.run_dir.name
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    # This environment's own `tensorboard` script, not whichever one PATH finds first.
    script = Path(sys.executable).with_name("tensorboard")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "tensorboard.main"]
    command += ["--logdir", str(logdir), "--host", "127.0.0.1", "--port", str(port),
                "--load_fast=false"]
    log = tmp_path / "tensorboard.log"
    with log.open("wb") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        # Up once /data/runs answers with our run (the first load of the logdir is async).
        deadline = time.monotonic() + 60
        runs: object = None
        while runs != [run]:
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"tensorboard did not serve {run!r} (runs: {runs}, exit code "
                            f"{server.returncode}):\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.25)
            try:
                runs = _get(f"{base}/data/runs")
            except (OSError, ValueError):  # not listening yet, or not ready to answer
                continue

        # The scalars dashboard: [wall_time, step, value] per point.
        points = _get(f"{base}/data/plugin/scalars/scalars?run={run}&tag=train/loss")
        assert [p[1] for p in points] == [1, 2, 3]
        assert [p[2] for p in points] == [approx(r["train/loss"]) for r in result.history]

        # The HParams tab: columns from the experiment, values from the session group.
        experiment = _get(f"{base}/data/plugin/hparams/experiment", {"experimentName": ""})
        names = {h["name"] for h in experiment["hparamInfos"]}
        assert names == set(RUN_HPARAMS) | {"ending.kind", "ending.iterations", "ending.grad_max"}
        metric_tags = [m["name"]["tag"] for m in experiment["metricInfos"]]
        assert metric_tags == list(HPARAM_METRICS)
        groups = _get(f"{base}/data/plugin/hparams/session_groups", {
            "experimentName": "",
            "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE",
                                "STATUS_RUNNING"],
            "colParams": [{"hparam": "optim.lr"}, {"hparam": "optim.name"},
                          {"metric": {"tag": "val/loss"}}],
            "startIndex": 0,
            "sliceSize": 10,
        })
        (group,) = groups["sessionGroups"]
        assert group["hparams"]["optim.lr"] == approx(0.05)
        assert group["hparams"]["optim.name"] == "adam"
        values = {m["name"]["tag"]: m["value"] for m in group["metricValues"]}
        # A metric column is the curve's last point.
        assert values["val/loss"] == approx(result.history[-1]["val/loss"])
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
