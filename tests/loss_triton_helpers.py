"""What the Triton loss tests share (test_loss_triton_parity.py, test_loss_triton.py): where
they run, their data, our loss on fresh leaves with and without the kernels, the comparison, and
the autouse fixture that sends CPU tensors to the kernels under the interpreter.

Importing this module skips the test module that imports it except on a GPU, or under Triton's
interpreter in the fresh process that ``tests/test_triton_kernels.py`` starts with
``TRITON_INTERPRET=1`` (which has to be set before triton is first imported).
"""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
if not INTERPRETED and not (torch.cuda.is_available()
                            and importlib.util.find_spec("triton") is not None):
    pytest.skip("runs on a GPU, or under Triton's interpreter in the fresh process that "
                "tests/test_triton_kernels.py starts", allow_module_level=True)

from logreg_torch.loss import (  # noqa: E402
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    route,
)

DEVICE = "cpu" if INTERPRETED else "cuda"
KINDS = ["probs", "logits"]
REDUCTIONS = ["mean", "sum", "none"]


def on_kernels(grad_fn_name):
    """The grad_fn of a loss the kernels computed: triton_ops._Eager's in eager mode, the
    custom op's (its register_autograd backward) when traced or forced."""
    return grad_fn_name in ("_EagerBackward",
                            "GeneratedBackwardFor_logreg_torch_bce_forward_defaultBackward")


@pytest.fixture(autouse=True)
def _kernels_here(monkeypatch):
    if INTERPRETED:
        monkeypatch.setattr(route, "CPU_INTERPRETER", True)


def _data(kind, shape, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    if kind == "probs":
        x = torch.rand(shape, generator=gen) * 0.98 + 0.01
    else:
        x = torch.randn(shape, generator=gen) * 4
    y = torch.rand(shape, generator=gen)
    return x.to(DEVICE, dtype), y.to(DEVICE, dtype)


def _run(kind, x, y, weight=None, pos_weight=None, wrt=("input",), grad_out=None, **kwargs):
    """(loss, gradients w.r.t. ``wrt``, grad_fn name) of our loss on fresh leaves."""
    given = {"input": x, "target": y, "weight": weight, "pos_weight": pos_weight}
    leaves = {k: None if t is None else t.detach().clone().requires_grad_(k in wrt)
              for k, t in given.items()}
    if kind == "probs":
        loss = binary_cross_entropy(leaves["input"], leaves["target"], leaves["weight"],
                                    **kwargs)
    else:
        loss = binary_cross_entropy_with_logits(leaves["input"], leaves["target"],
                                                leaves["weight"], leaves["pos_weight"],
                                                **kwargs)
    g = torch.ones_like(loss) if grad_out is None else grad_out
    grads = torch.autograd.grad(loss, [leaves[k] for k in wrt], g) if wrt else ()
    return loss.detach(), grads, loss.grad_fn.name() if loss.grad_fn else ""


def _both(monkeypatch, *args, **kwargs):
    """The kernels' result, then the result of the path without them."""
    ours = _run(*args, **kwargs)
    with monkeypatch.context() as m:
        m.setattr(route, "ENABLED", False)
        reference = _run(*args, **kwargs)
    assert on_kernels(ours[2]) and not on_kernels(reference[2]), (ours[2], reference[2])
    return ours, reference


def _assert_close(a, b, rtol=2e-5, atol=2e-6):
    torch.testing.assert_close(a[0], b[0], rtol=rtol, atol=atol)
    assert len(a[1]) == len(b[1])
    for u, v in zip(a[1], b[1], strict=True):
        torch.testing.assert_close(u, v, rtol=rtol, atol=atol)
