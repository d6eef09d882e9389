"""``runtime.init_distributed``: which backend a torchrun job joins with (``train.dist_backend``),
checked by recording what reaches ``torch.distributed.init_process_group``."""

from __future__ import annotations

from datetime import timedelta

import pytest
import torch.distributed as dist

from logreg_torch.runtime import init_distributed


@pytest.fixture
def joined(monkeypatch) -> list[tuple[str, timedelta]]:
    calls: list[tuple[str, timedelta]] = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group",
                        lambda backend, timeout: calls.append((backend, timeout)))
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    return calls


def test_cpu_jobs_default_to_gloo(joined) -> None:
    assert init_distributed("cpu", None, 7.0) == (1, 2)
    assert joined == [("gloo", timedelta(seconds=7))]


def test_dist_backend_overrides_the_default(joined) -> None:
    init_distributed("cpu", "mpi", 300.0)
    assert joined == [("mpi", timedelta(seconds=300))]


def test_a_plain_process_joins_no_group(joined, monkeypatch) -> None:
    monkeypatch.delenv("WORLD_SIZE")
    assert init_distributed("cpu", "gloo", 300.0) == (0, 1)
    assert joined == []
