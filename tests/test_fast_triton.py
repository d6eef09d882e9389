"""fast.py's fused linear + BCE-with-logits on the Triton kernel (loss/triton_linear.py) against
the plain path (``head(X)`` then our loss with its kernels off), in the same harness: the loss
and the gradients w.r.t. weight, bias and features, for both layouts of X, float32 and bfloat16
X, every pos_weight, odd sizes, the target check; and a full-batch L-BFGS fit on it.

Runs on a GPU, and on CPU tensors under Triton's interpreter in the fresh process that
``tests/test_triton_kernels.py`` starts; elsewhere the module is skipped as a whole.
"""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch
from torch import nn

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
if not INTERPRETED and not (torch.cuda.is_available()
                            and importlib.util.find_spec("triton") is not None):
    pytest.skip("runs on a GPU, or under Triton's interpreter in the fresh process that "
                "tests/test_triton_kernels.py starts", allow_module_level=True)

from logreg_torch.fast import linear_bce_with_logits  # noqa: E402
from logreg_torch.loss import binary_cross_entropy_with_logits, route  # noqa: E402
from logreg_torch.loss import triton_linear as kernel  # noqa: E402

DEVICE = "cpu" if INTERPRETED else "cuda"
# On a GPU every test here is a GPU test: `pytest -m cuda` selects them with the others.
pytestmark = [] if INTERPRETED else [pytest.mark.cuda]


@pytest.fixture(autouse=True)
def _kernels_here(monkeypatch):
    if INTERPRETED:
        monkeypatch.setattr(route, "CPU_INTERPRETER", True)
    torch.manual_seed(0)


def _data(n, d, layout="column", dtype=torch.float32):
    X = torch.randn(n, d) if layout == "row" else torch.randn(d, n).t()
    y = torch.randint(0, 2, (n,)).float()
    y[::3] = torch.rand(len(y[::3]))  # soft labels too
    return X.to(DEVICE, dtype), y.to(DEVICE)


def _fused(X, head, y, pos_weight=None, wrt_x=False):
    """(loss, gradients w.r.t. weight, bias[, X]) of the fused path, and whether the kernel ran
    (spied on: fast.py calls it through route.linear())."""
    ran = []
    real = kernel.forward

    def spy(*args):
        ran.append(1)
        return real(*args)

    kernel.forward = spy
    try:
        Xr = X.clone().requires_grad_(wrt_x)
        loss = linear_bce_with_logits(Xr, head, y, pos_weight)
    finally:
        kernel.forward = real
    params = [head.weight] + ([head.bias] if head.bias is not None else [])
    return loss, torch.autograd.grad(loss, params + [Xr] * wrt_x), bool(ran)


def _plain(X, head, y, pos_weight=None, wrt_x=False, monkeypatch=None):
    with monkeypatch.context() as m:
        m.setattr(route, "ENABLED", False)
        Xr = X.float().clone().requires_grad_(wrt_x)
        logits = nn.functional.linear(Xr, head.weight, head.bias).squeeze(-1)
        loss = binary_cross_entropy_with_logits(logits, y, pos_weight=pos_weight)
        params = [head.weight] + ([head.bias] if head.bias is not None else [])
        return loss, torch.autograd.grad(loss, params + [Xr] * wrt_x)


def _assert_close(ours, theirs, tol=1e-5):
    torch.testing.assert_close(ours[0], theirs[0], rtol=tol, atol=tol)
    for a, b in zip(ours[1], theirs[1], strict=True):
        torch.testing.assert_close(a.float(), b.float(), rtol=tol, atol=tol)


@pytest.mark.parametrize("pos_weight", [None, "one", "per-row"])
@pytest.mark.parametrize("layout", ["row", "column"])
@pytest.mark.parametrize(("n", "d"), [(1, 1), (3, 7), (1000, 10), (777, 100), (33, 1000)])
def test_kernel_equals_the_plain_path(n, d, layout, pos_weight, monkeypatch):
    X, y = _data(n, d, layout)
    head = nn.Linear(d, 1).to(DEVICE)
    pw = {None: None, "one": torch.tensor(2.5, device=DEVICE),
          "per-row": torch.rand(n, device=DEVICE) * 3}[pos_weight]
    *ours, ran = _fused(X, head, y, pw, wrt_x=True)
    assert ran
    _assert_close(ours, _plain(X, head, y, pw, wrt_x=True, monkeypatch=monkeypatch))


@pytest.mark.parametrize("prefetch", [False, True])
@pytest.mark.parametrize("per_sm", [1, 3])
def test_no_bias_and_many_programs(prefetch, per_sm, monkeypatch):
    """4 rows per block: many blocks, several per program (the last ones partly or wholly past
    the last row), with and without the prefetch of the next block."""
    monkeypatch.setattr(kernel, "LAUNCH", {key: (64, 4, per_sm, prefetch) for key in kernel.LAUNCH})
    monkeypatch.setattr(kernel, "_multiprocessors", lambda device: 5)
    X, y = _data(301, 16)
    shape = kernel.grid(301, 16, 4, X.device)
    assert shape["ITERS"] > 1 and shape["programs"] > 1
    head = nn.Linear(16, 1, bias=False).to(DEVICE)
    *ours, ran = _fused(X, head, y)
    assert ran
    _assert_close(ours, _plain(X, head, y, monkeypatch=monkeypatch))


def test_offsets_past_two_to_the_31_elements(monkeypatch):
    """A column-major X whose last column starts past 2**31 elements (as from column 215 of
    1e7 rows): 3 columns 2**30 + 16 elements apart, in a 4 GiB allocation of which only what the
    columns hold is ever touched. Offsets are int64: an int32 product wrapped and read out of
    bounds (on an H200, an illegal memory access at 1e7 x 1000)."""
    n, d, stride = 40, 3, 2**30 + 16
    storage = torch.empty(stride * (d - 1) + n, dtype=torch.bfloat16, device=DEVICE)
    X = storage.as_strided((n, d), (1, stride))
    X.copy_(torch.randn(n, d))
    y = torch.rand(n, device=DEVICE)
    head = nn.Linear(d, 1).to(DEVICE)
    ran = []
    real = kernel.forward
    monkeypatch.setattr(kernel, "forward", lambda *a: ran.append(1) or real(*a))
    loss = linear_bce_with_logits(X, head, y)
    ours = loss, torch.autograd.grad(loss, [head.weight, head.bias])
    assert ran
    _assert_close(ours, _plain(X, head, y, monkeypatch=monkeypatch), tol=1e-4)


def test_bfloat16_features_with_float32_weights(monkeypatch):
    """X in bfloat16 (half the bytes to read); the products and sums in float32."""
    X, y = _data(500, 100, dtype=torch.bfloat16)
    head = nn.Linear(100, 1).to(DEVICE)
    *ours, ran = _fused(X, head, y)
    assert ran and ours[0].dtype == torch.float32
    _assert_close(ours, _plain(X, head, y, monkeypatch=monkeypatch), tol=1e-4)


def test_what_the_kernel_does_not_cover_takes_the_torch_ops_path(monkeypatch):
    X, y = _data(64, 3)
    head = nn.Linear(3, 1).to(DEVICE)
    assert _fused(X, head, y)[2]
    assert not _fused(X.double(), nn.Linear(3, 1).to(DEVICE).double(), y.double())[2]
    monkeypatch.setattr(route, "LINEAR_MAX_D", 2)  # wider than the kernel's registers hold
    assert not _fused(X, head, y)[2]


@pytest.mark.skipif(not INTERPRETED, reason="on a GPU the assert is device-side (the loss's "
                    "test_cuda_range_error_is_a_device_assert covers it)")
def test_targets_outside_the_unit_range_are_an_error():
    X, y = _data(300, 4)
    head = nn.Linear(4, 1).to(DEVICE)
    y[123] = -0.5
    with pytest.raises(RuntimeError, match=r"target must be in \[0, 1\]"):
        linear_bce_with_logits(X, head, y)
    y[123] = float("nan")
    with pytest.raises(RuntimeError, match=r"target must be in \[0, 1\]"):
        linear_bce_with_logits(X, head, y)
    assert torch.isfinite(linear_bce_with_logits(X, head, y.nan_to_num(0.5),
                                                 check_range=False))


def test_lbfgs_fit_on_the_kernel_reaches_the_same_model(tmp_path, monkeypatch):
    """A full-batch L-BFGS fit (the loop's fast path, X column-major) with the kernel and
    without it end at the same coefficients."""
    from logreg_torch.config import load_config
    from logreg_torch.train import fit

    monkeypatch.setattr("logreg_torch.tracking.figures_available", lambda: False)
    ran = []
    real = kernel.forward
    monkeypatch.setattr(kernel, "forward", lambda *a: ran.append(1) or real(*a))

    def coefficients(enabled, name):
        monkeypatch.setattr(route, "ENABLED", enabled)
        cfg = load_config(None, [
            f"train.device={'cuda' if DEVICE == 'cuda' else 'cpu'}", "optim.name=lbfgs",
            "train.batch_size=null", "train.epochs=3", "optim.max_iter=30", "loss.l2=0.01",
            "data.val_fraction=0", "data.test_fraction=0", "log.histogram_every=0",
            f"log.run_dir={tmp_path / name}"])
        model = fit(cfg).model
        return torch.cat([p.detach().flatten().cpu() for p in model.parameters()])

    with_kernel = coefficients(True, "kernel")
    assert ran
    torch.testing.assert_close(with_kernel, coefficients(False, "torch"), rtol=1e-4, atol=1e-5)
