"""What the data.streaming tests (test_data_streaming.py, test_data_streaming_memory.py)
share: no final figures in their fits, and a fitted model's weights as one vector."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _no_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    # Rendering the final matplotlib figures is most of a small fit's time; test_tracking
    # covers them.
    monkeypatch.setattr("logreg_torch.tracking.figures_available", lambda: False)


def weights(result) -> torch.Tensor:
    return torch.cat([p.detach().double().flatten() for p in result.model.parameters()])
