"""What the distributed tests (test_distributed.py, test_distributed_faults.py) share: their
skip marks, the repo's paths, and starting a torchrun job or a process in a clean environment
that is killed with its whole process group if it hangs."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

MARKS = [
    pytest.mark.slow,
    pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                       reason="needs torch.distributed with the gloo backend"),
    pytest.mark.skipif(sys.platform == "win32", reason="kills hung jobs by process group"),
]

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
TRAIN = ROOT / "scripts" / "train.py"
LAUNCH_TIMEOUT = 120  # seconds; a torchrun job is ~10 s here, mostly two torch imports
# Set by torchrun for its workers; a leftover in the test's environment would confuse them.
DIST_ENV = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK",
            "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in DIST_ENV}
    # Two workers on a small machine: one thread each, or they fight over the cores.
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **extra)
    return env


def _run(command: list[str], timeout: float, env: dict[str, str] | None = None
         ) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run ``command`` from the repo root; on timeout kill its whole process group (torchrun
    and its workers) and fail. Returns the finished process and its wall time."""
    start = time.monotonic()
    proc = subprocess.Popen(command, cwd=ROOT, env=env or _env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{' '.join(command)} hung for {timeout} s\nstdout:\n{out[-3000:]}\n"
                    f"stderr:\n{err[-3000:]}")
    seconds = time.monotonic() - start
    return subprocess.CompletedProcess(command, proc.returncode, out, err), seconds


def _torchrun(script: Path, config: str, *overrides: str, timeout: float = LAUNCH_TIMEOUT,
              check: bool = True, launcher: tuple[str, ...] = (),
              env: dict[str, str] | None = None
              ) -> tuple[subprocess.CompletedProcess[str], float]:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", *launcher,
               "--master_port", str(_free_port()), str(script), str(CONFIGS / config),
               *overrides, "--quiet"]
    result, seconds = _run(command, timeout, env)
    if check and result.returncode != 0:
        pytest.fail(f"torchrun exited {result.returncode}\nstderr:\n{result.stderr[-5000:]}")
    return result, seconds


def _load(path: Path) -> dict:
    return torch.load(path, weights_only=True)
