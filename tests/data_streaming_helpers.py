"""What the data.streaming tests (test_data_streaming.py, test_data_streaming_memory.py)
share: no final figures in their fits, and a fitted model's weights as one vector."""

from __future__ import annotations

import torch


def weights(result) -> torch.Tensor:
    return torch.cat([p.detach().double().flatten() for p in result.model.parameters()])
