"""Launching our Triton kernels in eager mode with less host work than Triton's own launch.

A small loss is host-bound on a GPU: its time is the Python that runs per call. Triton's
``kernel[grid](*args)`` binds every argument, works out how each one specializes the kernel
(dtype and 16-byte alignment of a tensor; an int that is 1, divisible by 16, 32 or 64 bits),
builds a cache key from that and checks the globals the kernel read; measured on a CPU
(2 cores, shared, Triton 3.6's own binder and key for ``loss_forward``'s 26 parameters): 16.5 us
per launch before the driver call, against about 3.5 us for a torch op. Here the compiled kernel
Triton returned is kept under a key that tells apart every case Triton's specialization tells
apart (a finer key: ``tests/test_triton_launch.py`` checks it against Triton's own rules), and
later calls hand the arguments straight to it (``CompiledKernel[grid](*args)``, Triton's API for
a compiled kernel).

Only for real CUDA launches of our own kernels: the custom ops (compile, export) launch through
torch's ``wrap_triton``; Triton's interpreter (CPU tensors, tests) through the kernel itself.
Off by default (``ENABLED = False``: Triton's own launch everywhere) until a GPU run shows it
equal to Triton's launch (``tests/test_loss_triton.py``'s CUDA test, bitwise) and faster
(``scripts/tune_gpu.py`` times both): it hands arguments to Triton's compiled kernel object,
which no GPU has run through this code yet. The cache holds compiled kernels (no
tensors), keyed by dtypes, alignments and constants, like Triton's own cache.
"""

from __future__ import annotations

import torch
import triton
from triton.runtime import driver
from triton.runtime.jit import JITFunction

ENABLED = False
# A compiled kernel takes every argument, constexprs included, from Triton 3.2 on (Triton's own
# launch passes them all); before, only the others: there, Triton's own launch.
_TRITON_OK = tuple(int(v) for v in triton.__version__.split(".")[:2]) >= (3, 2)


def arg_key(a) -> object:
    """What of ``a`` can change the kernel Triton compiles for it: a tensor's dtype and whether
    its data is 16-byte aligned; an int's width, whether it is 1 and whether 16 divides it; a
    float or a bool only its type."""
    kind = type(a)
    if kind is int:
        return a == 1, a % 16 == 0, -_I32 <= a < _I32, a < _I64
    if kind is float or kind is bool:
        return kind
    if isinstance(a, torch.Tensor):
        return a.dtype, a.data_ptr() % 16 == 0
    return kind


_I32, _I64 = 2**31, 2**63


class Launcher:
    """``Launcher(kernel)[grid](*args, num_warps=..., **constexprs)`` launches ``kernel`` as
    ``kernel[grid](...)`` would: ``args`` are its runtime arguments in order (its constexpr
    parameters all come after them), ``constexprs`` every one of the rest, by name."""

    def __init__(self, kernel):
        self.kernel = kernel
        self.compiled: dict[tuple, object] = {}
        self.fast = _TRITON_OK and isinstance(kernel, JITFunction)
        if self.fast:
            names = kernel.arg_names
            first = [i for i, p in enumerate(kernel.params) if p.is_constexpr]
            if first and first != list(range(first[0], len(names))):
                raise ValueError(f"{kernel.fn.__name__}: constexpr parameters must come last")
            self.constexpr_names = names[first[0]:] if first else []

    def __getitem__(self, grid: tuple):
        def launch(*args, num_warps: int, **constexprs) -> None:
            self.launch(grid, args, constexprs, num_warps)
        return launch

    def launch(self, grid: tuple, args: tuple, constexprs: dict, num_warps: int) -> None:
        if not (self.fast and ENABLED):
            self.kernel[grid](*args, **constexprs, num_warps=num_warps)
            return
        device = torch.cuda.current_device()  # where Triton launches, as its own launch does
        key = (device, num_warps, *constexprs.items(), *map(arg_key, args))
        entry = self.compiled.get(key)
        if entry is None:
            compiled = self.kernel[grid](*args, **constexprs, num_warps=num_warps)
            if hasattr(compiled, "result"):  # Triton's asynchronous compile
                compiled = compiled.result()
            # the constexprs in the kernel's order, as the compiled kernel takes them
            self.compiled[key] = compiled, tuple(constexprs[k] for k in self.constexpr_names)
            return
        compiled, values = entry
        # a compiled kernel reads grid[0], grid[1] and grid[2] (Triton's own launch pads them)
        grid3 = (grid[0], grid[1] if len(grid) > 1 else 1, grid[2] if len(grid) > 2 else 1)
        compiled[grid3](*args, *values, stream=driver.active.get_current_stream(device))
