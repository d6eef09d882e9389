"""The minibatch step as a CUDA graph (``train.cuda_graphs``): the row gather, the forward
pass and the loss, the backward pass, gradient clipping and the fused Adam / AdamW update,
captured once and replayed at every step. A small model's step is dozens of tiny kernels
whose launches cost more than their work; a replay is one launch. The batch's row indices go
into a fixed index tensor on the device (one copy), and everything else the graph touches
stays where the capture put it: the gradients, the optimizer's state, the running loss.

The capture follows torch's recipe for a whole training step: a few eager steps first (on a
side stream: lazy initialisations and the optimizer's state happen there, not in the
graph), gradients set to None just before the capture (so the captured backward writes them
rather than adds to them), autocast without its weight cache. An epoch's last, smaller batch
runs eagerly on the same tensors. The loss is the same arithmetic as the eager loop's: a
test runs this class with the capture replaced by eager calls and gets the eager loop's
weights bit for bit (the capture itself is checked on a GPU).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable

import torch
from torch import Tensor, nn

from logreg_torch.config import ConfigError
from logreg_torch.objective import Objective
from logreg_torch.runtime import Runtime

WARMUP_STEPS = 3  # eager steps before the capture


def check_runtime(runtime: Runtime) -> None:
    """A captured step belongs to one process on one GPU: anything else is a config error."""
    if runtime.device.type != "cuda" or runtime.world_size > 1:
        where = (f"{runtime.world_size} processes" if runtime.world_size > 1
                 else f"train.device resolved to {runtime.device}")
        raise ConfigError(f"train.cuda_graphs=true needs one process on a CUDA device "
                          f"({where}); set train.cuda_graphs: false")


def cuda_capture(step: Callable[[], None]) -> Callable[[], None]:
    """Capture ``step`` into a CUDA graph; returns its replay."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return graph.replay


class StepGraph:
    """One run's minibatch step. ``step(idx)`` trains on rows ``idx`` of (X, y) and adds
    their summed loss to ``total`` (on the device, read once an epoch)."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, objective: Objective,
                 X: Tensor, y: Tensor, batch_size: int, runtime: Runtime,
                 grad_clip: float | None,
                 capture: Callable[[Callable[[], None]], Callable[[], None]] | None = None):
        """``capture`` turns a step into its replay: ``cuda_capture`` unless given."""
        self.model, self.optimizer, self.objective = model, optimizer, objective
        self.X, self.y, self.runtime, self.grad_clip = X, y, runtime, grad_clip
        self.idx = torch.zeros(batch_size, dtype=torch.long, device=X.device)
        self.total = torch.zeros((), dtype=torch.float64, device=X.device)
        self.capture = capture
        self.replay: Callable[[], None] | None = None
        self.eager_steps = 0

    def step(self, idx: Tensor) -> None:
        full = len(idx) == len(self.idx)
        if full:
            self.idx.copy_(idx)
        if full and self.replay is not None:
            self.replay()
        elif full and self.eager_steps >= WARMUP_STEPS:
            self.optimizer.zero_grad(set_to_none=True)
            self.replay = (self.capture or cuda_capture)(lambda: self._train(self.idx))
            self.replay()  # the capture recorded this step; the replay runs it
        else:
            self._eager(self.idx if full else idx)

    def _eager(self, idx: Tensor) -> None:
        # Once captured, the graph owns the gradient tensors: zero them in place, never
        # replace them. Before, a warm-up step runs on a side stream, as torch's recipe says.
        self.optimizer.zero_grad(set_to_none=self.replay is None)
        side = self.replay is None and self.X.is_cuda
        stream = torch.cuda.Stream() if side else None
        if stream is not None:
            stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
            self._train(idx)
        if stream is not None:
            torch.cuda.current_stream().wait_stream(stream)
        self.eager_steps += 1

    def _train(self, idx: Tensor) -> None:
        """Gather, loss, backward, clip, update, running loss: what the graph records."""
        xb, yb = self.X.index_select(0, idx), self.y.index_select(0, idx)
        dtype = self.runtime.autocast_dtype
        amp = (torch.autocast(self.X.device.type, dtype=dtype, cache_enabled=False)
               if dtype is not None else contextlib.nullcontext())
        with amp:
            data = self.objective.model_loss(self.model, xb, yb)
        (data + self.objective.penalty(self.model)).backward()
        if self.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        with warnings.catch_warnings():  # capturable=True stepped outside a capture: meant
            warnings.filterwarnings("ignore", message=".*capturable=True.*")
            self.optimizer.step()
        self.total += data.detach().double() * len(idx)
