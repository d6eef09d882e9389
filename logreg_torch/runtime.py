"""Where we run, resolved once: device, rank and world size, seeds."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch

from logreg_torch.config import ConfigError

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
    """``auto`` picks CUDA when present; asking for CUDA without it is a config error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device={name!r} but CUDA is not available on this machine; "
                              "use train.device=cpu or auto")
        index = device.index or 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"train.device={name!r} but this machine has "
                              f"{torch.cuda.device_count()} CUDA device(s)")
    return device


def resolve_runtime(device: str, precision: str, rank: int = 0, world_size: int = 1) -> Runtime:
    dev = resolve_device(device)
    if dev.type == "cuda" and dev.index is None and world_size > 1:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
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
        if backend is None:
            backend = "nccl" if resolve_device(device).type == "cuda" else "gloo"
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
    """RNG states as tensors and lists only, so a checkpoint loads with weights_only=True."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])


def autocast(runtime: Runtime):
    """The autocast context of the run: mixed precision for bf16/fp16, otherwise off."""
    if runtime.autocast_dtype is None:
        return torch.autocast(runtime.device.type, enabled=False)
    return torch.autocast(runtime.device.type, dtype=runtime.autocast_dtype)
