"""losses_fast.py's reused scratch tensors under real concurrency: two threads made to hold their
scratch tensors at the same moment (a barrier inside ``scratch_tensors``), with the interpreter
switching threads every microsecond, so that shared buffers would be overwritten mid-call.
The negative control shares one cache between the threads and shows the check then fails."""

from __future__ import annotations

import sys
import threading
import types

import pytest
import torch

from logreg_torch import losses_fast
from logreg_torch.losses import binary_cross_entropy_with_logits

CALLS = 6
REAL_SCRATCH = losses_fast.scratch_tensors


def _cases() -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(12)
    hard = torch.randint(0, 2, (5000,), generator=gen).float()
    soft = torch.rand(5000, generator=gen)  # the two threads take different kernels too
    return [(torch.randn(5000, generator=gen), y) for y in (hard, soft)]


def _run(case) -> list[tuple[torch.Tensor, torch.Tensor]]:
    x, y = case
    x = x.clone().requires_grad_()
    out = []
    for _ in range(CALLS):
        loss = binary_cross_entropy_with_logits(x, y)
        out.append((loss.detach(), torch.autograd.grad(loss, x)[0]))
    return out


def _concurrently(monkeypatch, cases) -> list:
    """Run every case on its own thread; each call's scratch request waits for the other
    thread's, so the two calls always overlap."""
    barrier = threading.Barrier(len(cases))
    def scratch(*args, **kwargs):
        bufs = REAL_SCRATCH(*args, **kwargs)
        barrier.wait(timeout=60)
        return bufs

    monkeypatch.setattr(losses_fast, "scratch_tensors", scratch)
    results: list = [None] * len(cases)

    def work(i: int) -> None:
        results[i] = _run(cases[i])

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=work, args=(i,)) for i in range(len(cases))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    finally:
        sys.setswitchinterval(interval)
    assert all(r is not None for r in results), "a thread failed"
    return results


def _mismatches(results, expected) -> int:
    return sum(not (torch.equal(loss, loss0) and torch.equal(grad, grad0))
               for got, want in zip(results, expected, strict=True)
               for (loss, grad), (loss0, grad0) in zip(got, want, strict=True))


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch) -> None:
    monkeypatch.setattr(losses_fast, "_CHUNK", 256)  # 20 chunks a call: many steps to interleave


def test_concurrent_threads_get_their_own_scratch(monkeypatch) -> None:
    cases = _cases()
    expected = [_run(case) for case in cases]
    assert _mismatches(_concurrently(monkeypatch, cases), expected) == 0


def test_shared_scratch_would_fail_the_check(monkeypatch) -> None:
    # Negative control: one cache for both threads, as a module-level one would be. Which
    # writes collide is up to the scheduler, so this side is statistical: it has failed the
    # check at the first attempt in every run tried; three attempts keep it from flaking.
    cases = _cases()
    expected = [_run(case) for case in cases]
    monkeypatch.setattr(losses_fast, "_SCRATCH", types.SimpleNamespace())
    assert any(_mismatches(_concurrently(monkeypatch, cases), expected) > 0 for _ in range(3))
