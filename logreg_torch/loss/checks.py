"""What the losses check before computing anything: arguments, shapes, dtypes, devices, and the
[0, 1] range of probabilities and targets.

Exception types follow torch's: ValueError for shapes and reduction, RuntimeError for dtypes,
value ranges, broadcasting and label_smoothing.

Range checks. Real CPU tensors, eager (also in torch.func transforms, unwrapped first): a host
check whose one-line RuntimeError names the range found. Compile, export, CUDA, other devices:
one ``torch._assert_async`` for all the tensors, in the graph, no host sync (on CUDA it raises at
the next sync, as torch's own check does). Inside torch.func transforms (eager) that assert runs
on the real tensors under the wrappers, outside the transforms (``_assert_async`` has no
batching rule; the real tensor holds every sample of a vmap), so CUDA still has no host sync.
The Triton kernels check inside the kernel instead (``triton_ops``): a flag on the device and
the same one assert. Meta and fake tensors outside a trace, or a torch.func transform under
compile (no vmap rule): nothing to read, nothing checked.
"""

from __future__ import annotations

import functools
import operator
from contextlib import nullcontext

import torch
from torch import Tensor

from logreg_torch.loss.cpu import _PLAIN_TYPES, check_range_host
from logreg_torch.torch_compat import (
    assert_async,
    functorch_transforms_active,
    outside_functorch,
    unwrap_functorch,
)

REDUCTIONS = ("none", "mean", "sum")


def range_message(fn: str, names: list[str]) -> str:
    """The message of the in-graph range assert (it cannot say which value failed)."""
    return f"{fn}: all elements of {' and '.join(names)} must be in [0, 1] (no NaN)"


def check_range(fn: str, *named: tuple[Tensor, str]) -> None:
    compiling = torch.compiler.is_compiling()
    transformed = functorch_transforms_active()
    if compiling and transformed:
        return
    on_device = []
    for t, name in named:
        if not compiling:
            t = unwrap_functorch(t)
            if type(t) in _PLAIN_TYPES and t.device.type == "cpu":
                check_range_host(t, name, fn)
                continue
        on_device.append((t, name))
    if on_device:  # one condition (False for a NaN too), one reduction, one assert
        with outside_functorch() if transformed else nullcontext():
            ok = functools.reduce(operator.and_, [(t >= 0) & (t <= 1) for t, _ in on_device])
            assert_async(ok.all(), range_message(fn, [name for _, name in on_device]))


def check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"{reduction!r} is not a valid value for reduction; expected one "
                         f"of {REDUCTIONS}")


def check_label_smoothing(label_smoothing: float) -> None:
    if not 0.0 <= label_smoothing < 1.0:
        raise RuntimeError(f"label_smoothing must be in [0, 1), got {label_smoothing}")


def check_broadcast(t: Tensor | None, name: str, input: Tensor, fn: str) -> None:
    if t is None:
        return
    shape, ok = input.shape, t.dim() <= input.dim()
    for a, b in zip(reversed(t.shape), reversed(shape), strict=False):
        ok = ok and (a == b or a == 1)
    if not ok:
        raise RuntimeError(
            f"{fn}: {name} of shape {tuple(t.shape)} does not broadcast to the input shape "
            f"{tuple(input.shape)}"
        )
    if t.device != input.device:
        raise RuntimeError(f"{fn}: {name} is on {t.device} but input is on {input.device}")


def check_tensors(fn: str, input: Tensor, target: Tensor) -> None:
    if input.shape != target.shape:
        raise ValueError(
            f"{fn}: target shape {tuple(target.shape)} must be the same as input shape "
            f"{tuple(input.shape)}"
        )
    if not input.is_floating_point():
        raise RuntimeError(f"{fn}: input must be a floating-point tensor, got {input.dtype}")
    if not target.is_floating_point():
        raise RuntimeError(
            f"{fn}: target must be a floating-point tensor of values in [0, 1], got "
            f"{target.dtype}; convert it with target.to({input.dtype})"
        )
    if target.dtype != input.dtype:
        raise RuntimeError(f"{fn}: target dtype {target.dtype} does not match input dtype "
                           f"{input.dtype}")
    if target.device != input.device:
        raise RuntimeError(f"{fn}: target is on {target.device} but input is on {input.device}")
