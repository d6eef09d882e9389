"""logreg_torch/loss/triton_launch.py: its cache key tells apart every case Triton's own
specialization does (so a cached compiled kernel is the one Triton would launch), and the
launcher hands each call to Triton or to the compiled kernel with the arguments in order.
Without a GPU: Triton's own specialization rules run on CPU tensors; the compiled kernel is a
recorder. (On a GPU, tests/test_loss_triton.py runs every option through the launcher.)"""

from __future__ import annotations

import importlib.util
import itertools
import os

import pytest
import torch

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("triton") is None or os.environ.get("TRITON_INTERPRET") == "1",
    reason="needs triton, compiling (not its interpreter)")


def _samples():
    base = torch.zeros(64)
    tensors = [base, base[1:], base[4:], base.to(torch.bfloat16), base.to(torch.bfloat16)[8:],
               base.to(torch.bfloat16)[1:], torch.zeros(8, dtype=torch.int32)]
    ints = [0, 1, 2, 15, 16, 17, 32, -16, -1, 2**31 - 16, 2**31 - 1, 2**31, 2**32, -(2**31),
            -(2**31) - 16, 2**63 - 16, 2**63]
    return tensors + ints + [0.0, 1.0, 2.5, True, False, None]


def test_the_key_tells_apart_whatever_triton_specializes_on():
    from triton._C.libtriton import native_specialize_impl
    from triton.backends.compiler import GPUTarget
    from triton.backends.nvidia.compiler import CUDABackend

    from logreg_torch.loss.triton_launch import arg_key

    backend = CUDABackend(GPUTarget("cuda", 90, 32))
    samples = _samples()
    triton_spec = [native_specialize_impl(backend, a, False, True, True) for a in samples]
    ours = [arg_key(a) for a in samples]
    for i, j in itertools.combinations(range(len(samples)), 2):
        if ours[i] == ours[j]:
            assert triton_spec[i] == triton_spec[j], (samples[i], samples[j])
    assert len(set(triton_spec)) > 10  # the samples do span Triton's cases


class _Compiled:
    """A stand-in for Triton's CompiledKernel: records launches. Like Triton's (3.2 to 3.9),
    its launcher reads the grid's three sizes as they are given."""

    def __init__(self, calls):
        self.calls = calls

    def __getitem__(self, grid):
        def launch(*args, stream):
            self.calls.append(("compiled", (grid[0], grid[1], grid[2]), args, stream))
        return launch


def _launcher(monkeypatch):
    import triton
    import triton.language as tl

    from logreg_torch.loss import triton_launch

    @triton.jit
    def kernel(x_ptr, n, scale, BLOCK: tl.constexpr, FLAG: tl.constexpr):
        pass

    calls = []

    def run(*args, grid, warmup, **kwargs):
        calls.append(("triton", grid, args, kwargs))
        return _Compiled(calls)

    monkeypatch.setattr(kernel, "run", run)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)

    class Active:
        @staticmethod
        def get_current_stream(device):
            return 1234 + device

    monkeypatch.setattr(triton_launch, "driver", type("Driver", (), {"active": Active}))
    monkeypatch.setattr(triton_launch, "ENABLED", True)  # off by default until a GPU measures it
    return triton_launch, triton_launch.Launcher(kernel), calls


def test_the_first_call_compiles_through_triton_and_later_ones_launch_the_kernel(monkeypatch):
    triton_launch, launch, calls = _launcher(monkeypatch)
    x = torch.zeros(64)
    launch[(3,)](x, 100, 0.5, FLAG=True, BLOCK=128, num_warps=4)
    launch[(5,)](x, 116, 0.25, FLAG=True, BLOCK=128, num_warps=4)
    assert calls[0] == ("triton", (3,), (x, 100, 0.5), dict(FLAG=True, BLOCK=128, num_warps=4))
    # constexprs in the kernel's order, after the runtime arguments; the current stream
    assert calls[1] == ("compiled", (5, 1, 1), (x, 116, 0.25, 128, True), 1234)
    # constexprs named in another order: a key of its own (Triton's cache has the kernel)
    launch[(5,)](x, 116, 0.25, BLOCK=128, FLAG=True, num_warps=4)
    launch[(6,)](x, 116, 0.25, BLOCK=128, FLAG=True, num_warps=4)
    assert [c[0] for c in calls[2:]] == ["triton", "compiled"]
    assert calls[3] == ("compiled", (6, 1, 1), (x, 116, 0.25, 128, True), 1234)
    # anything Triton would compile anew for goes through Triton again
    for args, constexprs, warps in [((x[1:], 100, 0.5), dict(FLAG=True, BLOCK=128), 4),
                                    ((x, 1, 0.5), dict(FLAG=True, BLOCK=128), 4),
                                    ((x, 100, 0.5), dict(FLAG=True, BLOCK=256), 4),
                                    ((x, 100, 0.5), dict(FLAG=True, BLOCK=128), 8),
                                    ((x.bfloat16(), 100, 0.5), dict(FLAG=True, BLOCK=128), 4)]:
        before = len(calls)
        launch[(1,)](*args, **constexprs, num_warps=warps)
        assert calls[before][0] == "triton", args
    monkeypatch.setattr(triton_launch, "ENABLED", False)
    launch[(5,)](x, 116, 0.25, BLOCK=128, FLAG=True, num_warps=4)
    assert calls[-1][0] == "triton"


def test_constexpr_parameters_must_come_last():
    import triton
    import triton.language as tl

    from logreg_torch.loss.triton_launch import Launcher

    @triton.jit
    def kernel(x_ptr, BLOCK: tl.constexpr, n):
        pass

    with pytest.raises(ValueError, match="constexpr parameters must come last"):
        Launcher(kernel)


def test_every_kernel_of_the_package_can_use_it():
    from logreg_torch.loss import triton_linear, triton_ops

    launchers = [*triton_ops._LAUNCHERS.values(), triton_linear._LAUNCHER]
    assert len(launchers) == 6 and all(launch.fast for launch in launchers)
