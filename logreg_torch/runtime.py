"""Where we run, resolved once: device, rank and world size, seeds."""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch

from logreg_torch.config import ConfigError
from logreg_torch.interrupts import critical

PRECISIONS = {"fp32": torch.float32, "fp64": torch.float64, "bf16": torch.bfloat16,
              "fp16": torch.float16}


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    dtype: torch.dtype  # parameters and data: float32, or float64 for precision fp64
    autocast_dtype: torch.dtype | None  # bf16 / fp16 mixed precision, else None
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str) -> torch.device:
    """The device this process runs on for ``train.device=name``; always with an index for CUDA
    (``torch.cuda.set_device`` takes no bare ``cuda``).

    - ``cpu``; ``mps`` (Apple's GPU);
    - ``cuda``: the first visible GPU (``CUDA_VISIBLE_DEVICES`` says which are visible), or under
      torchrun ``cuda:<LOCAL_RANK>``: one process per GPU;
    - ``cuda:N``: GPU N; under torchrun only with one process on this node (two processes
      cannot share one GPU in NCCL);
    - ``auto``: ``cuda`` when there is a GPU for every process on this node, else the CPU.

    A device this machine lacks is a ConfigError naming the setting and what the machine has.
    """
    local_rank, local_world = local_process()
    if name == "cpu":
        return torch.device("cpu")
    if name == "auto":
        if not torch.cuda.is_available() or torch.cuda.device_count() < local_world:
            return torch.device("cpu")
        name = "cuda"
    if name == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"train.device='mps' but this machine has no MPS device (an "
                              f"Apple GPU); it has {machine_devices()}; use train.device=auto")
        return torch.device("mps")
    device = torch.device(name)  # the config allows cuda and cuda:N only
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise ConfigError(f"train.device={name!r} but this machine has no CUDA device: "
                          f"{machine_devices()}; use train.device=cpu or auto")
    if device.index is None:
        if local_rank >= count:
            raise ConfigError(
                f"train.device={name!r} under torchrun: local rank {local_rank} of "
                f"{local_world} takes cuda:{local_rank}, but this machine has "
                f"{machine_devices()}; start at most {count} process(es) per node "
                f"(--nproc_per_node={count}) or use train.device=cpu")
        return torch.device("cuda", local_rank)
    if device.index >= count:
        valid = "cuda:0" if count == 1 else f"one of cuda:0..cuda:{count - 1}"
        raise ConfigError(f"train.device={name!r} but this machine has {machine_devices()}; "
                          f"use train.device=cuda or {valid}")
    if local_world > 1:
        raise ConfigError(
            f"train.device={name!r} under torchrun with {local_world} processes on this node: "
            f"each needs a GPU of its own; use train.device=cuda (process i takes cuda:i)")
    return device


def local_process() -> tuple[int, int]:
    """(LOCAL_RANK, processes on this node) under torchrun; (0, 1) for a plain process."""
    world = launched_world_size()
    if world <= 1:
        return 0, 1
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    return int(os.environ.get("LOCAL_RANK", 0)), local_world


def machine_devices() -> str:
    """What this machine offers, for the messages of a device it lacks: "cpu only (...)" or
    "cpu and 1 CUDA device (cuda:0 NVIDIA H200)"."""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    mps = " and an MPS device" if torch.backends.mps.is_available() else ""
    if count == 0:
        if torch.version.cuda is None:
            why = f"torch {torch.version.__version__} is built without CUDA"
        elif os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
            why = f"CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']!r} hides every GPU"
        else:
            why = "no GPU or driver is visible to torch"
        return f"cpu{mps} only ({why})"
    names = []
    for i in range(count):
        try:
            names.append(f"cuda:{i} {torch.cuda.get_device_name(i)}")
        except Exception:  # a name is a nicety: a driver that cannot give it must not hide the rest
            names.append(f"cuda:{i}")
    plural = "" if count == 1 else "s"
    return f"cpu{mps} and {count} CUDA device{plural} ({', '.join(names)})"


def resolve_runtime(device: str, precision: str, rank: int = 0, world_size: int = 1) -> Runtime:
    """Device, dtypes, rank and world size of this process. On CUDA it makes the device
    current and starts CUDA and cuBLAS here, in the run's set-up, so that their one-off cost
    (a second or so) is not charged to the first training step or to the first evaluation."""
    dev = resolve_device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev.index)
        torch.cuda.current_blas_handle()  # creates the context and the cuBLAS handle
    if dev.type == "mps" and precision == "fp64":
        raise ConfigError("train.precision=fp64 on train.device=mps: MPS has no float64; use "
                          "train.device=cpu or train.precision=fp32")
    mixed = precision in ("bf16", "fp16")
    return Runtime(
        device=dev,
        dtype=torch.float64 if precision == "fp64" else torch.float32,
        autocast_dtype=PRECISIONS[precision] if mixed else None,
        rank=rank,
        world_size=world_size,
    )


def launched_world_size() -> int:
    """WORLD_SIZE from torchrun's environment; 1 for a plain process (no flag needed)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(device: str, backend: str | None, timeout_s: float) -> tuple[int, int]:
    """Join torchrun's process group (gloo on CPU, nccl on CUDA unless ``backend`` says);
    return (rank, world_size). A no-op (0, 1) when not launched by torchrun."""
    import torch.distributed as dist

    world = launched_world_size()
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        # Resolved before joining: a rank without its device says so and exits (exit 2)
        # instead of leaving its peers waiting in the rendezvous.
        kind = resolve_device(device).type
        if backend is None:
            backend = "nccl" if kind == "cuda" else "gloo"
        try:
            # The timeout bounds the rendezvous and every collective: a dead peer ends the
            # job with an error instead of a hang.
            dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
        except Exception as e:  # DistStoreError, DistNetworkError, RuntimeError
            raise DistributedError(
                f"rank {os.environ.get('RANK', '?')}: could not join the process group at "
                f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')} within "
                f"train.dist_timeout={timeout_s:g}s ({_first_line(e)})") from None
    return dist.get_rank(), dist.get_world_size()


class DistributedError(RuntimeError):
    """A distributed run cannot go on (a peer died, a rendezvous timed out); one line."""


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:300]


# Below this many elements of training rows a CPU run computes on one torch thread: its ops are
# too small to split, and waking (or, with OMP_WAIT_POLICY unset, spinning) OpenMP threads
# costs more than they do. On the 2-core development machine, beside other work: the
# estimator's breast_cancer fit (569 x 30), medians of 60 interleaved fits, 28 ms with 2
# threads and 16 ms with one; configs/mlp.yaml's train stage (40 epochs of 13 minibatches), see
# the README's "fixed cost of a run".
ONE_THREAD_ELEMENTS = 1 << 20


def one_thread_applies(device: torch.device, elements: int) -> bool:
    """Whether work on ``elements`` elements on ``device`` runs faster on one torch thread."""
    return device.type == "cpu" and elements < ONE_THREAD_ELEMENTS


@contextmanager
def threads_for(device: torch.device, elements: int) -> Iterator[None]:
    """torch on one thread inside the block when ``one_thread_applies``; the thread count is
    restored afterwards (torch's is process-wide: a caller's own work keeps its threads)."""
    if not one_thread_applies(device, elements):
        yield
        return
    with one_thread():
        yield


@contextmanager
def one_thread() -> Iterator[None]:
    """torch on one thread inside the block, the thread count restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# One pool of threads for the process, made on first use; its threads run torch ops, which
# release the GIL (logreg_torch.fast, logreg_torch.linear_terms).
_POOL: ThreadPoolExecutor | None = None
# (process id, workers) of _POOL: a forked child inherits the pool object but not its
# threads, so it must make its own.
_POOL_KEY = (0, 0)


def thread_pool(workers: int) -> ThreadPoolExecutor:
    global _POOL, _POOL_KEY
    key = (os.getpid(), workers)
    if _POOL is None or key != _POOL_KEY:
        if _POOL is not None and key[0] == _POOL_KEY[0]:
            _POOL.shutdown(wait=False)  # the thread count changed: let the old threads go
        _POOL = ThreadPoolExecutor(workers, thread_name_prefix="logreg_torch")
        _POOL_KEY = key
    return _POOL


def in_threads(fn: Callable[[list, int], object], items: Sequence,
               device: torch.device) -> list:
    """``fn(share, slot)`` in each of up to torch.get_num_threads() threads, the items dealt in
    turn (slot i gets items i, i + W, ...), torch at one thread in each; the results in slot
    order. One share in the calling thread for one item or thread, or off the CPU. Ctrl-C waits
    for the threads: left running, they would still write into tensors the run goes on with."""
    workers = min(torch.get_num_threads(), len(items)) if device.type == "cpu" else 1
    if workers <= 1:
        return [fn(list(items), 0)]
    pool = thread_pool(workers)
    with critical(), one_thread():
        futures = [pool.submit(fn, list(items[i::workers]), i) for i in range(workers)]
        return [f.result() for f in futures]


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # seeds CUDA too
    if deterministic:
        # cuBLAS needs this for deterministic matmuls; harmless on CPU.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


def rng_state() -> dict:
    """RNG states as tensors only, so a checkpoint loads with weights_only=True: the CPU's,
    and the current GPU's when this process uses CUDA (dropout on the GPU draws from it).
    A process that never touched CUDA leaves it alone: asking for every GPU's state would
    start CUDA on all of them, a second or more in a CPU run on a GPU machine."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()  # host-side seed and offset: no sync
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda is None or not torch.cuda.is_initialized():
        return  # a CPU run: nothing on the GPU draws random numbers
    if isinstance(cuda, list):  # older checkpoints: one state per GPU
        if not cuda:
            return
        cuda = cuda[min(torch.cuda.current_device(), len(cuda) - 1)]
    torch.cuda.set_rng_state(cuda)


def autocast(runtime: Runtime):
    """The autocast context of the run: mixed precision for bf16/fp16, otherwise off."""
    if runtime.autocast_dtype is None:
        return torch.autocast(runtime.device.type, enabled=False)
    return torch.autocast(runtime.device.type, dtype=runtime.autocast_dtype)
