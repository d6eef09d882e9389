"""Screenshot every TensorBoard tab of one run folder with headless Chromium.

    python scripts/screenshot_tensorboard.py runs/default-20250101-120000 --out shots/

Starts ``tensorboard`` on that one run (named as its folder; no other run beside it) on a free
port bound to 127.0.0.1, saves one PNG per tab (Time Series, Scalars, Images, HParams, PR
curves, Text, Custom scalars) and stops the server. Needs a ``chromium`` (or
``chromium-browser`` / ``google-chrome``) on PATH; on Debian: ``apt-get install chromium``.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

TABS = {
    "time_series": "timeseries",
    "scalars": "scalars",
    "images": "images",
    "hparams": "hparams",
    "pr_curves": "pr_curves",
    "text": "text",
    "custom_scalars": "custom_scalars",
}
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_up(base: str, server: subprocess.Popen, timeout: float = 60.0) -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # localhost: no proxy
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"error: tensorboard exited with code {server.returncode}")
        try:
            with opener.open(f"{base}/data/runs", timeout=5) as response:
                if response.read().strip() not in (b"", b"[]"):
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"error: tensorboard did not answer on {base} within {timeout:g}s")


def tensorboard_command(run_dir: Path, port: int) -> list[str]:
    """``tensorboard`` serving the one run in ``run_dir``, under the folder's name (a
    ``--logdir`` of its parent would show every run beside it)."""
    tensorboard = Path(sys.executable).with_name("tensorboard")
    command = [str(tensorboard)] if tensorboard.exists() else [sys.executable, "-m",
                                                               "tensorboard.main"]
    name = run_dir.resolve().name.replace(",", "_").replace(":", "_")  # the spec's separators
    return command + ["--logdir_spec", f"{name}:{run_dir}", "--host", "127.0.0.1",
                      "--port", str(port), "--load_fast=false", "--reload_interval=0"]


def screenshot_all(run_dir: Path, out: Path, browser: str, size: str = "1400,1000") -> list[Path]:
    """One PNG per tab of TensorBoard showing the run in ``run_dir``; returns the paths."""
    out.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    command = tensorboard_command(run_dir, port)
    shots = []
    with tempfile.TemporaryDirectory() as profile, open(out / "tensorboard.log", "wb") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_until_up(base, server)
            for name, plugin in TABS.items():
                png = out / f"{name}.png"
                subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu",
                                f"--user-data-dir={profile}", "--hide-scrollbars",
                                f"--screenshot={png}", f"--window-size={size}",
                                "--virtual-time-budget=10000", f"{base}/#{plugin}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               timeout=120, check=True)
                shots.append(png)
        finally:
            server.terminate()
            server.wait(timeout=30)
    return shots


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a run folder (runs/<name>-<timestamp>)")
    parser.add_argument("--out", type=Path, default=Path("screenshots"))
    args = parser.parse_args()
    browser = next((b for b in BROWSERS if shutil.which(b)), None)
    if browser is None:
        print("error: no chromium on PATH (Debian: apt-get install chromium)", file=sys.stderr)
        return 2
    for png in screenshot_all(args.run_dir, args.out, browser):
        print(png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
