"""One epoch: minibatches are slices of a permutation, not a DataLoader."""

from __future__ import annotations

import math

import torch
from test_fit import (  # tests/ is on sys.path under pytest
    N_TRAIN,
    no_figures,  # noqa: F401 (the autouse fixture)
    run,
)

import logreg_torch.objective as objective_module

# ----------------------------------------------------------------------------- batches


def test_minibatches_are_slices_without_a_dataloader(tmp_path, monkeypatch) -> None:
    def no_loader(*args, **kwargs):
        raise AssertionError("fit must not build a DataLoader")

    monkeypatch.setattr(torch.utils.data.DataLoader, "__init__", no_loader)
    sizes: list[int] = []
    model_loss = objective_module.Objective.model_loss

    def record(self, model, features, targets):
        if model.training:
            sizes.append(len(features))
        return model_loss(self, model, features, targets)

    monkeypatch.setattr(objective_module.Objective, "model_loss", record)
    result = run(tmp_path, "train.epochs=3", "train.batch_size=48")
    per_epoch = math.ceil(N_TRAIN / 48)
    assert [r["step"] for r in result.history] == [per_epoch, 2 * per_epoch, 3 * per_epoch]
    assert sizes == [48, 48, 48, 16] * 3

    sizes.clear()
    full = run(tmp_path, "train.epochs=2", "train.batch_size=null", name="full")
    assert [r["step"] for r in full.history] == [1, 2]
    assert sizes == [N_TRAIN, N_TRAIN]
