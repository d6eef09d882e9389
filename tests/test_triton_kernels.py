"""The Triton kernels without a GPU: they build for one (Triton compiles them for sm_90 here,
which the interpreter does not check), and their tests (test_loss_triton_parity.py,
test_loss_triton.py, test_fast_triton.py) pass on CPU tensors under Triton's interpreter, in a
fresh process: the interpreter is chosen as kernels are defined, so ``TRITON_INTERPRET=1`` must
be set before triton is first imported. On a GPU those files also run in this process, on CUDA
tensors."""

from __future__ import annotations

import importlib.util
import inspect
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                                  reason="triton is not installed (the test extra has it)")


@needs_triton
def test_kernel_tests_pass_under_the_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
         "tests/test_loss_triton_parity.py", "tests/test_loss_triton.py",
         "tests/test_fast_triton.py"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    summary = out.stdout.strip().splitlines()[-1]
    assert out.returncode == 0, out.stdout[-8000:] + out.stderr[-4000:]
    passed = int(re.search(r"(\d+) passed", summary).group(1))
    assert passed >= 100 and "runs on a GPU, or under" not in out.stdout, summary  # they ran


def _compile(fn, types: dict[str, str], constants: dict, num_warps: int = 8):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    signature = {name: "constexpr" if name in constants else types[name]
                 for name in fn.arg_names}
    source = ASTSource(fn, signature, constexprs={(fn.arg_names.index(k),): v
                                                  for k, v in constants.items()})
    return triton.compile(source, target=GPUTarget("cuda", 90, 32),
                          options={"num_warps": num_warps})


def _common(*names: str, dtype: str = "fp32") -> dict[str, str]:
    types = {"n": "i32", "w_inner": "i32", "w_period": "i32", "pw_inner": "i32",
             "pw_period": "i32", "denom": "fp32", "grad_scale": "fp32", "smoothing": "fp32",
             "flag_ptr": "*i32", "gw_ptr": "*fp32", "gpw_ptr": "*fp32", "part_ptr": "*fp32",
             "ok_ptr": "*i32", "nblocks": "i32", "d": "i32", "stride_n": "i32",
             "stride_d": "i32", "out_ptr": "*fp32", "programs": "i32", "scale": "fp32"}
    types.update({name: "*" + dtype for name in names})
    return types


@needs_triton
def test_kernels_build_for_a_gpu():
    """Every kernel, with most options on, through Triton's compiler to a cubin for an H100/H200
    (sm_90): type and shape errors that the interpreter lets pass fail here."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("this process runs Triton's interpreter")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Triton 3.9 announces a change of default fp fusion
        from logreg_torch.loss import triton_kernels as k

        data = ("x_ptr", "y_ptr", "w_ptr", "pw_ptr")
        builds = [
            _compile(k.loss_forward, _common(*data, "gx_ptr", dtype="bf16"), dict(
                LOGITS=True, W_MODE=3, PW_MODE=2, SMOOTH=True, REDUCE=True, ONE_BLOCK=False,
                WRITE_GX=True, CHECK_X=False, CHECK_Y=True, BLOCK=2048)),
            _compile(k.loss_forward, _common(*data, "gx_ptr"), dict(
                LOGITS=False, W_MODE=1, PW_MODE=0, SMOOTH=False, REDUCE=False, ONE_BLOCK=True,
                WRITE_GX=False, CHECK_X=True, CHECK_Y=True, BLOCK=1024)),
            _compile(k.loss_forward_plain, _common("x_ptr", "y_ptr", "gx_ptr"), dict(
                LOGITS=True, REDUCE=True, ONE_BLOCK=False, WRITE_GX=True, CHECK_X=False,
                CHECK_Y=True, BLOCK=2048)),
            _compile(k.loss_backward, _common(*data, "g_ptr", "gx_ptr", "gy_ptr"), dict(
                LOGITS=True, W_MODE=2, PW_MODE=1, SMOOTH=True, G_EACH=True, WANT_X=True,
                WANT_Y=True, WANT_W=True, WANT_PW=True, BLOCK=2048)),
            _compile(k.loss_finish, _common(), dict(REDUCE=True, CHECK=True, ITERS=4,
                                                    BLOCK=1024), num_warps=4),
            _compile(k.scale_in_place, _common("g_ptr", "s_ptr"), dict(ITERS=8, BLOCK=2048)),
            *[_compile(k.linear_loss_forward, _common("w_ptr", "b_ptr", "y_ptr", "pw_ptr",
                                                      "gz_ptr") | {"x_ptr": x}, dict(
                HAS_B=True, PW_MODE=2, WRITE_GZ=True, CHECK_Y=True, ITERS=16, BLOCK_N=32,
                BLOCK_D=128, PREFETCH=prefetch), num_warps=4)
              for x, prefetch in (("*fp32", True), ("*bf16", False))],
        ]
    assert all(len(b.asm["cubin"]) > 1000 for b in builds)


def _names_read(code) -> set[str]:
    """Global and attribute names a function's code (and the code nested in it) reads."""
    names = set(code.co_names)
    for const in code.co_consts:
        if inspect.iscode(const):
            names |= _names_read(const)
    return names


@needs_triton
def test_host_code_reads_no_triton_language_values():
    """torch.compile traces the host code of the kernels (the launches' arguments, the operand
    plans), so it must see plain Python values. Reading a ``tl.constexpr`` there broke every
    compiled CUDA call with torch 2.11 (dynamo cannot trace ``int(constexpr)``); kernels compare
    their constexpr arguments with literals instead."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("this process runs Triton's interpreter")
    import triton.language as tl
    from triton.runtime.jit import JITFunction

    from logreg_torch.loss import triton_kernels, triton_linear, triton_ops

    assert not [name for name, v in vars(triton_kernels).items() if isinstance(v, tl.constexpr)]
    for module in (triton_ops, triton_linear):
        functions = [f for f in vars(module).values()
                     if inspect.isfunction(f) and f.__module__ == module.__name__]
        functions += [f for cls in vars(module).values() if inspect.isclass(cls)
                      and cls.__module__ == module.__name__ for f in vars(cls).values()
                      if isinstance(f, staticmethod | classmethod) or inspect.isfunction(f)]
        for f in functions:
            f = getattr(f, "__func__", f)
            read = {name: getattr(module, name) for name in _names_read(f.__code__)
                    if hasattr(module, name)}
            bad = [name for name, v in read.items()
                   if isinstance(v, tl.constexpr) or v is tl]
            assert not bad, f"{module.__name__}.{f.__qualname__} reads {bad}"
            assert not isinstance(f, JITFunction)
