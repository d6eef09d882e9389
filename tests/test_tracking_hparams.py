"""The HParams tab as a person sees it, through a real ``tensorboard`` server: the same columns
for every run, empty where a run has no value, and the five ticked that the README names."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_tracking_run import _free_port, _get  # tests/ is on sys.path under pytest

from logreg_torch.config import load_config
from logreg_torch.tracking import RUN_HPARAMS
from logreg_torch.train import fit

REPO = Path(__file__).resolve().parents[1]
ENDING = ("ending.kind", "ending.iterations", "ending.grad_max")


def ticked(hparam_infos: list[dict]) -> list[str]:
    """What the HParams tab ticks: its front end sorts the columns marked ``differs`` first
    (a stable sort of the server's order) and ticks the first five."""
    ordered = sorted(hparam_infos, key=lambda h: not h.get("differs", False))
    return [h["name"] for h in ordered[:5]]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """An Adam run and an L-BFGS run in one logdir, and a tensorboard server on it."""
    runs = tmp_path_factory.mktemp("hparams") / "runs"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("logreg_torch.tracking.figures_available", lambda: False)
        for name, extra in (("adam", []), ("lbfgs", ["optim.name=lbfgs",
                                                     "train.batch_size=null"])):
            fit(load_config(REPO / "configs" / "default.yaml", [
                "train.epochs=2", "log.histogram_every=0", f"log.run_dir={runs / name}",
                *extra]))
    port = _free_port()
    script = Path(sys.executable).with_name("tensorboard")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "tensorboard.main"]
    server = subprocess.Popen([*command, "--logdir", str(runs), "--host", "127.0.0.1", "--port",
                               str(port), "--load_fast=false"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline, listed = time.monotonic() + 60, None
        while listed != ["adam", "lbfgs"]:
            assert server.poll() is None and time.monotonic() < deadline, listed
            time.sleep(0.25)
            try:
                listed = sorted(_get(f"{base}/data/runs"))
            except (OSError, ValueError):
                continue
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_hparams_columns_and_the_five_ticked_are_the_readme_s(served) -> None:
    experiment = _get(f"{served}/data/plugin/hparams/experiment", {"experimentName": ""})
    infos = experiment["hparamInfos"]
    # The same columns whichever run's experiment the server took.
    assert {h["name"] for h in infos} == set(RUN_HPARAMS) | set(ENDING)
    text = " ".join((REPO / "README.md").read_text().split())
    said = re.search(r"Five are ticked: ((?:`[a-z_.0-9]+`(?:, )?)+)\.", text)
    assert said, "the README names the ticked columns"
    assert ticked(infos) == re.findall(r"`([^`]+)`", said.group(1))
    assert ticked(infos) == ["data.source", "loss.l2", "model.name", "optim.lr", "optim.name"]
    listed = re.search(r"The HParams tab has the same columns for every run: the\s+settings that "
                       r"tell runs apart \(([^)]*)\) and how the run ended \(([^)]*)\)", text)
    assert listed, "the README lists the columns"
    assert re.findall(r"`([^`]+)`", listed.group(1)) == list(RUN_HPARAMS)
    assert re.findall(r"`([^`]+)`", listed.group(2)) == list(ENDING)


def test_a_setting_a_run_does_not_use_is_an_empty_cell(served) -> None:
    groups = _get(f"{served}/data/plugin/hparams/session_groups", {
        "experimentName": "",
        "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE",
                            "STATUS_RUNNING"],
        "colParams": [{"hparam": "optim.name"}, {"hparam": "optim.lr"},
                      {"hparam": "ending.iterations"}],
        "startIndex": 0, "sliceSize": 10})
    cells = {g["hparams"]["optim.name"]: g["hparams"] for g in groups["sessionGroups"]}
    assert set(cells) == {"adam", "lbfgs"}
    assert cells["adam"]["optim.lr"] == pytest.approx(0.05)
    assert "optim.lr" not in cells["lbfgs"]  # L-BFGS's line search does not use it
    assert cells["lbfgs"]["ending.iterations"] >= 1
    assert "ending.iterations" not in cells["adam"] and cells["adam"]["ending.kind"] == "finished"
