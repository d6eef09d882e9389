"""scripts/benchmark.py: which sections run for --device, the GPU section's code on the CPU,
and a refusal of --device cuda where torch sees no GPU."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from script_modules import load

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "benchmark.py"


@pytest.fixture(scope="module")
def benchmark():
    pytest.importorskip("sklearn")
    return load("benchmark")


def test_device_picks_the_sections(benchmark) -> None:
    def titles(device):
        return [t.split(".")[0] for t, _ in benchmark._steps(True, device, 100.0)]

    assert titles("cuda") == ["1b"]
    assert titles("cpu") == ["1", "2", "3", "3b", "4", "5"]
    assert titles(None) == (["1", "1b", "2", "3", "3b", "4", "5"] if torch.cuda.is_available()
                            else titles("cpu"))


def test_the_gpu_section_measures_on_any_device(benchmark, capsys) -> None:
    rows = benchmark.bench_cuda(20_000, 10, repeat=1, peak_gbs=100.0, device=torch.device("cpu"))
    assert [r.name.split(" full-batch")[0] for r in rows] == ["cpu", "cpu"]
    assert all(r.ratio > 0 for r in rows)
    assert "GB/s of X" in capsys.readouterr().out


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: nothing to refuse")
def test_device_cuda_without_a_gpu_is_one_line_and_exit_2() -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--device", "cuda"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == "error: --device cuda, but torch sees no CUDA device here"
