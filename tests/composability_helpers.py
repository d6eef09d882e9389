"""What the test_composability*.py modules share: the two implementations (torch's and ours)
of each loss, the data and the small net they run on, the comparison, and the ``device``
parameter (cpu, and cuda where there is a GPU)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from logreg_torch.losses import binary_cross_entropy, binary_cross_entropy_with_logits

KINDS = ["probs", "logits"]
IMPLS = {
    ("probs", "torch"): F.binary_cross_entropy,
    ("probs", "ours"): binary_cross_entropy,
    ("logits", "torch"): F.binary_cross_entropy_with_logits,
    ("logits", "ours"): binary_cross_entropy_with_logits,
}
TOL = dict(rtol=1e-8, atol=1e-10)  # float64; second derivatives round differently
# On a GPU the tests below that take ``device`` run in float32 (the loss's Triton kernels'
# dtypes, so that they are the path under test where they apply), to float32 tolerances.
CUDA_TOL = dict(rtol=1e-4, atol=1e-6)


def pytest_generate_tests(metafunc):
    if "device" in metafunc.fixturenames:
        metafunc.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])


def _dtype(device):
    return torch.float64 if device == "cpu" else torch.float32


def _tol(device):
    return TOL if device == "cpu" else CUDA_TOL


def _data(kind, shape=(6, 3), dtype=torch.float64, seed=0, device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    if kind == "probs":
        x = torch.rand(shape, generator=gen, dtype=dtype) * 0.9 + 0.05
    else:
        x = torch.randn(shape, generator=gen, dtype=dtype) * 3
    y = torch.rand(shape, generator=gen, dtype=dtype)
    return x.to(device), y.to(device)


def _both(kind, run):
    """``run(loss_fn)`` with torch's loss and with ours: (torch's result, ours)."""
    return run(IMPLS[kind, "torch"]), run(IMPLS[kind, "ours"])


def _assert_close(a, b, **tol):
    if isinstance(a, tuple | list):
        assert len(a) == len(b)
        for u, v in zip(a, b, strict=True):
            _assert_close(u, v, **tol)
        return
    torch.testing.assert_close(b, a, **(tol or TOL))


class _Net(torch.nn.Module):
    """A two-layer net that ends in probabilities or logits."""

    def __init__(self, kind):
        super().__init__()
        torch.manual_seed(0)
        self.kind = kind
        self.body = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(),
                                        torch.nn.Linear(5, 1))

    def forward(self, x):
        z = self.body(x).squeeze(-1)
        return torch.sigmoid(z) if self.kind == "probs" else z


def _batch(n=8, dtype=torch.float64, device="cpu"):
    gen = torch.Generator().manual_seed(1)
    return (torch.randn(n, 4, generator=gen, dtype=dtype).to(device),
            torch.randint(0, 2, (n,), generator=gen).to(device, dtype))


class _WithLoss(torch.nn.Module):
    def __init__(self, kind, criterion):
        super().__init__()
        self.net, self.criterion = _Net(kind), criterion

    def forward(self, x, y):
        return self.criterion(self.net(x), y)
