"""scripts/screenshot_tensorboard.py: the server it starts shows the one run it is given."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from script_modules import load


@pytest.fixture(scope="module")
def shots():
    return load("screenshot_tensorboard")


def _events(folder: Path, tag: str) -> None:
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(log_dir=str(folder)) as writer:
        writer.add_scalar(tag, 1.0, 1)


def test_the_server_shows_only_the_run_given(shots, tmp_path) -> None:
    runs = tmp_path / "runs"
    for name in ("default-1", "default-2", "sgd-3"):  # 25 in the folder
        _events(runs / name, "train/loss")
    port = shots._free_port()
    server = subprocess.Popen(shots.tensorboard_command(runs / "default-2", port),
                              stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        shots._wait_until_up(base, server)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + 30
        while True:  # the first load of the logdir is asynchronous
            with opener.open(f"{base}/data/runs", timeout=10) as response:
                listed = json.loads(response.read())
            if listed or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        assert listed == ["default-2/."], listed
    finally:
        server.terminate()
        server.wait(timeout=30)
