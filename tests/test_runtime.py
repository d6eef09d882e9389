"""``runtime``: which device a process trains on (``train.device``), checked on any machine by
replacing torch.cuda's device calls with recorders that hold the calls to torch's contract
(``set_device`` takes an int or an indexed device, never a bare ``cuda``); which backend a
torchrun job joins with (``train.dist_backend``), by recording what reaches
``torch.distributed.init_process_group``; and the RNG state a checkpoint keeps."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from logreg_torch import cli
from logreg_torch.config import ConfigError
from logreg_torch.runtime import (
    in_threads,
    init_distributed,
    resolve_device,
    resolve_runtime,
    rng_state,
    set_rng_state,
    threads_for,
)

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO / "configs" / "default.yaml"
TORCHRUN_ENV = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK",
                "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID")


class FakeGPUs:
    """torch.cuda's device calls for a machine with ``names`` GPUs, as recorders. Each checks
    its argument as torch does and records it; nothing reaches a real driver."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, names: list[str]) -> None:
        self.names = names
        self.calls: list[tuple[str, int]] = []
        self.current = 0
        for name in TORCHRUN_ENV:
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: bool(self.names))
        monkeypatch.setattr(torch.cuda, "device_count", lambda: len(self.names))
        monkeypatch.setattr(torch.cuda, "set_device", self.set_device)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: self.current)
        monkeypatch.setattr(torch.cuda, "get_device_name", self.get_device_name)
        monkeypatch.setattr(torch.cuda, "current_blas_handle", self.current_blas_handle)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)

    def _index(self, device: object) -> int:
        # torch.cuda's rule (torch.cuda._utils._get_device_index): an int, or a CUDA device
        # with an index; torch.device("cuda") alone is the ValueError of issue 20.
        if isinstance(device, torch.device):
            if device.type != "cuda" or device.index is None:
                raise ValueError("Expected a torch.device with a specified index or an "
                                 f"integer, but got:{device}")
            device = device.index
        if not isinstance(device, int) or not 0 <= device < len(self.names):
            raise RuntimeError("CUDA error: invalid device ordinal")
        return device

    def set_device(self, device: object) -> None:
        self.current = self._index(device)
        self.calls.append(("set_device", self.current))

    def get_device_name(self, device: object = None) -> str:
        return self.names[self.current if device is None else self._index(device)]

    def current_blas_handle(self) -> int:
        self.calls.append(("blas_handle", self.current))
        return 1


def torchrun(monkeypatch: pytest.MonkeyPatch, local_rank: int, local_world: int) -> None:
    """The environment torchrun gives worker ``local_rank`` of ``local_world`` on one node."""
    monkeypatch.setenv("WORLD_SIZE", str(local_world))
    monkeypatch.setenv("RANK", str(local_rank))
    monkeypatch.setenv("LOCAL_RANK", str(local_rank))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(local_world))


H200 = ["NVIDIA H200"]


# ----------------------------------------------------------------------------- the device


@pytest.mark.parametrize("name", ["auto", "cuda"])
def test_cuda_is_an_indexed_device_made_current_before_anything_runs(monkeypatch, name) -> None:
    # Issue 20: resolve_runtime handed torch.device("cuda") to set_device, which torch refuses.
    gpus = FakeGPUs(monkeypatch, H200)
    runtime = resolve_runtime(name, "fp32")
    assert runtime.device == torch.device("cuda", 0)
    assert gpus.calls == [("set_device", 0), ("blas_handle", 0)]


def test_cuda_n_picks_that_gpu(monkeypatch) -> None:
    gpus = FakeGPUs(monkeypatch, ["A", "B", "C"])
    assert resolve_runtime("cuda:2", "bf16").device == torch.device("cuda", 2)
    assert gpus.calls == [("set_device", 2), ("blas_handle", 2)]


def test_auto_and_cpu_touch_no_gpu(monkeypatch) -> None:
    gpus = FakeGPUs(monkeypatch, [])
    assert resolve_runtime("auto", "fp32").device == torch.device("cpu")
    FakeGPUs(monkeypatch, H200)
    assert resolve_runtime("cpu", "fp32").device == torch.device("cpu")
    assert gpus.calls == []


def test_under_torchrun_each_process_takes_the_gpu_of_its_local_rank(monkeypatch) -> None:
    gpus = FakeGPUs(monkeypatch, ["A", "B"])
    torchrun(monkeypatch, local_rank=1, local_world=2)
    for name in ("cuda", "auto"):
        assert resolve_runtime(name, "fp32", rank=1, world_size=2).device == torch.device("cuda", 1)
    assert gpus.calls == [("set_device", 1), ("blas_handle", 1)] * 2


def test_auto_under_torchrun_with_fewer_gpus_than_processes_is_the_cpu(monkeypatch) -> None:
    # Every rank sees the same count, so they all agree: gloo on the CPU, not a rank without
    # a GPU.
    gpus = FakeGPUs(monkeypatch, H200)
    torchrun(monkeypatch, local_rank=0, local_world=2)
    assert resolve_device("auto") == torch.device("cpu")
    assert gpus.calls == []


BAD = {
    # (GPUs, torchrun (local rank, local world) or None, train.device, what the line says)
    "cuda:3 on one GPU": (H200, None, "cuda:3", [
        "train.device='cuda:3' but this machine has cpu and 1 CUDA device (cuda:0 NVIDIA H200)",
        "use train.device=cuda or cuda:0"]),
    "cuda on a CPU-only machine": ([], None, "cuda", [
        "train.device='cuda' but this machine has no CUDA device: cpu only", "train.device=cpu"]),
    "mps where there is none": (H200, None, "mps", [
        "train.device='mps' but this machine has no MPS device",
        "it has cpu and 1 CUDA device (cuda:0 NVIDIA H200)"]),
    "cuda for local rank 1 of 2 on one GPU": (H200, (1, 2), "cuda", [
        "train.device='cuda' under torchrun: local rank 1 of 2 takes cuda:1",
        "1 CUDA device (cuda:0 NVIDIA H200)", "--nproc_per_node=1"]),
    "cuda:0 for two processes": (["A", "B"], (0, 2), "cuda:0", [
        "train.device='cuda:0' under torchrun with 2 processes on this node",
        "train.device=cuda"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_device_the_machine_lacks_is_one_line_naming_what_it_has(monkeypatch, case) -> None:
    names, launch, device, fragments = BAD[case]
    gpus = FakeGPUs(monkeypatch, names)
    if launch is not None:
        torchrun(monkeypatch, *launch)
    with pytest.raises(ConfigError) as info:
        resolve_runtime(device, "fp32")
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    assert gpus.calls == []  # refused before any GPU was touched


def test_a_torch_without_cuda_or_a_hidden_gpu_is_named(monkeypatch) -> None:
    FakeGPUs(monkeypatch, [])
    monkeypatch.setattr(torch.version, "cuda", None)
    with pytest.raises(ConfigError, match=r"is built without CUDA\)"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(ConfigError, match=r"CUDA_VISIBLE_DEVICES='' hides every GPU"):
        resolve_device("cuda:0")


def test_fp64_on_mps_is_refused(monkeypatch) -> None:
    FakeGPUs(monkeypatch, [])
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("mps") == torch.device("mps")
    with pytest.raises(ConfigError, match="MPS has no float64"):
        resolve_runtime("mps", "fp64")


@pytest.mark.parametrize("launched", [False, True], ids=["one process", "torchrun rank 1"])
def test_the_train_command_says_it_in_one_line_and_exits_2(monkeypatch, tmp_path, capsys,
                                                           launched) -> None:
    gpus = FakeGPUs(monkeypatch, H200)
    if launched:  # init_distributed resolves the device before joining any process group
        torchrun(monkeypatch, local_rank=1, local_world=2)
        monkeypatch.setattr(dist, "init_process_group", lambda *a, **k: pytest.fail("joined"))
    monkeypatch.chdir(tmp_path)
    device = "cuda" if launched else "cuda:3"
    assert cli.main(["train", str(DEFAULT), f"train.device={device}", "--quiet"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1, err
    assert err.startswith(f"error: train.device='{device}' ") and "cuda:0 NVIDIA H200" in err
    assert not (tmp_path / "runs").exists() and gpus.calls == []


def test_the_readmes_example_is_what_the_command_prints(monkeypatch, tmp_path, capsys) -> None:
    section = (REPO / "README.md").read_text().split("\n## GPU\n", 1)[1].split("\n## ", 1)[0]
    command, shown = section.split("```text\n", 1)[1].split("```", 1)[0].strip().splitlines()
    FakeGPUs(monkeypatch, H200)  # the machine of the example: one H200
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").symlink_to(REPO / "configs")
    words = command.removeprefix("$ ").split()
    assert words[0] == "logreg-torch" and cli.main(words[1:]) == 2
    assert capsys.readouterr().err.strip() == shown


@pytest.mark.slow
@pytest.mark.skipif(not dist.is_available(), reason="needs torch.distributed")
def test_under_a_real_torchrun_the_ranks_say_it_in_one_line(tmp_path) -> None:
    # cuda:7 fails on every machine with two processes on it: no GPU, too few GPUs, or (with
    # eight) one GPU asked for by both processes.
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_ENV}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
         "--standalone", str(REPO / "scripts" / "train.py"), str(DEFAULT),
         "train.device=cuda:7", f"log.run_dir={tmp_path / 'run'}", "--quiet"],
        cwd=REPO, env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
        timeout=180)
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    # Every rank that gets this far says it in one line; torchrun stops the other ranks once
    # one has exited, so a slower rank (on a GPU machine each starts CUDA to count the GPUs
    # first) may be stopped before its line: one or two lines, each naming the setting.
    assert 1 <= len(errors) <= 2, done.stderr
    assert all("train.device='cuda:7'" in e for e in errors), done.stderr
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- torchrun backend


@pytest.fixture
def joined(monkeypatch) -> list[tuple[str, timedelta]]:
    calls: list[tuple[str, timedelta]] = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group",
                        lambda backend, timeout: calls.append((backend, timeout)))
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    return calls


def test_cpu_jobs_default_to_gloo(joined) -> None:
    assert init_distributed("cpu", None, 7.0) == (1, 2)
    assert joined == [("gloo", timedelta(seconds=7))]


def test_dist_backend_overrides_the_default(joined) -> None:
    init_distributed("cpu", "mpi", 300.0)
    assert joined == [("mpi", timedelta(seconds=300))]


def test_a_plain_process_joins_no_group(joined, monkeypatch) -> None:
    monkeypatch.delenv("WORLD_SIZE")
    assert init_distributed("cpu", "gloo", 300.0) == (0, 1)
    assert joined == []


def test_cuda_jobs_default_to_nccl_and_a_bad_device_never_joins(joined, monkeypatch) -> None:
    gpus = FakeGPUs(monkeypatch, ["A", "B"])
    torchrun(monkeypatch, local_rank=1, local_world=2)
    assert init_distributed("cuda", None, 5.0) == (1, 2)
    assert joined == [("nccl", timedelta(seconds=5))]
    # Even with the backend given, a rank without its device stops before the rendezvous,
    # rather than leave its peers waiting there.
    gpus.names = ["A"]
    with pytest.raises(ConfigError, match="local rank 1 of 2"):
        init_distributed("cuda", "gloo", 5.0)
    assert len(joined) == 1


# ----------------------------------------------------------------------------- RNG state


def test_a_cpu_process_keeps_the_cpu_rng_only_and_touches_no_gpu(monkeypatch) -> None:
    # torch.cuda.get_rng_state_all() starts CUDA on every GPU: a CPU run on a GPU machine must
    # not pay for that at each checkpoint.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU machine
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)  # this run never used it
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: pytest.fail("started CUDA"))
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda *a: pytest.fail("started CUDA"))
    state = rng_state()
    assert list(state) == ["torch"]
    expected = torch.rand(3)
    set_rng_state(state)
    assert torch.equal(torch.rand(3), expected)


def test_a_cuda_process_keeps_and_restores_its_gpus_rng(monkeypatch) -> None:
    restored = []
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    seven = torch.tensor([7], dtype=torch.uint8)
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda *a: seven)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, *a: restored.append(s.tolist()))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    state = rng_state()
    assert state["cuda"].tolist() == [7]
    set_rng_state(state)
    # A checkpoint of before (a list, one state per GPU) restores the current GPU's.
    set_rng_state({**state, "cuda": [torch.tensor([1], dtype=torch.uint8),
                                     torch.tensor([2], dtype=torch.uint8)]})
    assert restored == [[7], [2]]


# ----------------------------------------------------------------------------- threads


@pytest.fixture()
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_small_cpu_work_runs_on_one_thread_and_the_count_comes_back(two_threads) -> None:
    with threads_for(torch.device("cpu"), 1000):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    with pytest.raises(KeyError), threads_for(torch.device("cpu"), 1000):
        raise KeyError("a failed run")
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize("device, elements", [("cpu", 1 << 20), ("cuda", 10), ("meta", 10)])
def test_large_or_non_cpu_work_keeps_its_threads(two_threads, device, elements) -> None:
    with threads_for(torch.device(device), elements):
        assert torch.get_num_threads() == 2


def test_a_small_run_trains_on_one_thread_and_gives_the_threads_back(two_threads, tmp_path,
                                                                     monkeypatch) -> None:
    from logreg_torch import fit as fit_module
    from logreg_torch.config import load_config

    seen, train = [], fit_module.train_one_epoch

    def recording(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return train(*args, **kwargs)

    monkeypatch.setattr(fit_module, "train_one_epoch", recording)
    cfg = load_config(DEFAULT, [f"log.run_dir={tmp_path / 'run'}", "train.epochs=2"])
    fit_module.fit(cfg)
    assert seen == [1, 1] and torch.get_num_threads() == 2



def test_in_threads_deals_the_items_and_returns_the_shares_in_slot_order(two_threads) -> None:
    import threading

    def share(items, slot):
        return slot, items, torch.get_num_threads(), threading.current_thread().name

    out = in_threads(share, list(range(5)), torch.device("cpu"))
    assert [(slot, items) for slot, items, _, _ in out] == [(0, [0, 2, 4]), (1, [1, 3])]
    assert {t for _, _, t, _ in out} == {1}  # torch at one thread in each
    assert threading.current_thread().name not in {name for *_, name in out}
    assert torch.get_num_threads() == 2
    # one item, or off the CPU: one share, in the calling thread, its threads untouched
    for items, device in (([7], "cpu"), ([1, 2, 3], "cuda"), ([], "cpu")):
        (got,) = in_threads(share, items, torch.device(device))
        assert got[:3] == (0, items, 2) and got[3] == threading.current_thread().name


def test_in_threads_gives_the_threads_back_when_a_share_fails(two_threads) -> None:
    def share(items, slot):
        if slot == 1:
            raise KeyError("a failed share")
        return items

    with pytest.raises(KeyError):
        in_threads(share, [1, 2, 3], torch.device("cpu"))
    assert torch.get_num_threads() == 2
