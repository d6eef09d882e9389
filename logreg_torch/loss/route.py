"""Whether a loss call (or fast.py's full-batch epoch) runs on the Triton kernels.

Nothing here imports triton: ``import logreg_torch`` and runs on the CPU never do. The kernels
are the default for CUDA tensors of float32, bfloat16 or float16 when triton is installed and
torch has the custom-op route (``torch.library.triton_op`` with ``wrap_triton``: torch 2.6).
Everything else takes the reference path (``reference.py``), as before the kernels existed:
float64, empty inputs, other devices, tensor subclasses, torch.func transforms and forward AD
(the custom ops have no vmap or jvp rule), older torch, no triton, or ``LOGREG_TORCH_TRITON=0``
in the environment. ``tests/test_loss_triton.py`` shows each case.

For tests only, ``CPU_INTERPRETER = True`` sends CPU tensors through the same custom ops and
kernels, run by Triton's interpreter: the process must have ``TRITON_INTERPRET=1`` in its
environment before triton is first imported (the interpreter is chosen as kernels are defined,
and Triton's own library functions are defined when triton is imported).
"""

from __future__ import annotations

import importlib.util
import os
from types import ModuleType

import torch
from torch import Tensor, nn

from logreg_torch.torch_compat import forward_ad_active, functorch_transforms_active, is_fake

TRITON_OP_TORCH = (2, 6)  # pyproject.toml's `triton` extra says the same
_TORCH = tuple(int(v) for v in torch.version.__version__.split(".")[:2])
TORCH_HAS_TRITON_OP = _TORCH >= TRITON_OP_TORCH
TRITON_INSTALLED = importlib.util.find_spec("triton") is not None
ENABLED = os.environ.get("LOGREG_TORCH_TRITON", "1") != "0"
CPU_INTERPRETER = False  # tests only: see the module docstring
DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_PLAIN = (Tensor, nn.Parameter)


def available() -> bool:
    """The kernels can run in this process at all."""
    return ENABLED and TORCH_HAS_TRITON_OP and TRITON_INSTALLED


def on_kernel_device(t: Tensor) -> bool:
    device = t.device.type
    if device == "cpu" and CPU_INTERPRETER:
        if os.environ.get("TRITON_INTERPRET") != "1":
            raise RuntimeError("route.CPU_INTERPRETER needs TRITON_INTERPRET=1 in the "
                               "environment before triton is imported")
        return True
    return device == "cuda"


def kernels_apply(input: Tensor, *others: Tensor | None) -> bool:
    """The loss of ``input`` (with ``others``: target, weight, pos_weight) runs on the kernels."""
    if not available() or not on_kernel_device(input) or input.dtype not in DTYPES:
        return False
    if input.numel() == 0 or functorch_transforms_active() or forward_ad_active():
        return False
    return all(t is None or type(t) in _PLAIN or is_fake(t) for t in (input, *others))


def ops() -> ModuleType:
    """The custom ops (imports triton on first use)."""
    from logreg_torch.loss import triton_ops

    return triton_ops


def linear() -> ModuleType:
    """fast.py's fused linear + loss kernel (imports triton on first use)."""
    from logreg_torch.loss import triton_linear

    return triton_linear


LINEAR_MAX_D = 4096  # beyond, a block of rows no longer fits the kernel's registers


def linear_applies(features: Tensor, weight: Tensor, pos_weight: Tensor | None) -> bool:
    """fast.py's fused epoch of ``features`` (N, D) and a (1, D) ``weight`` runs on the kernel."""
    return (available() and on_kernel_device(features) and features.dim() == 2
            and features.dtype in DTYPES and weight.dtype in DTYPES
            and 0 < features.shape[1] <= LINEAR_MAX_D
            and all(t is None or type(t) in _PLAIN for t in (features, weight, pos_weight)))
