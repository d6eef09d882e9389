"""One epoch: minibatches are slices of a permutation, not a DataLoader."""

from __future__ import annotations

import math

import pytest
import torch
from test_fit import (  # tests/ is on sys.path under pytest
    N_TRAIN,
    run,
)

import logreg_torch.fit as fit_module
import logreg_torch.loop as loop_module
import logreg_torch.objective as objective_module

pytestmark = pytest.mark.usefixtures("no_figures")

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


# ----------------------------------------------------------------------------- CUDA


@pytest.mark.cuda
@pytest.mark.parametrize("overrides", [
    (),  # fp32 logistic: the fused linear + loss, fused Adam
    ("model.name=mlp", "model.hidden=[8]", "model.dropout=0.3", "train.precision=bf16",
     "train.grad_clip=1.0"),
    ("train.precision=fp16", "optim.name=sgd", "optim.momentum=0.9"),  # GradScaler
], ids=["fp32", "bf16-mlp-clip", "fp16-sgd"])
def test_a_cuda_epoch_makes_no_host_sync_after_its_first_step(tmp_path, monkeypatch,
                                                              overrides) -> None:
    # Every step of every epoch after the first one runs with torch's sync debug mode set to
    # raise: any .item(), float() or bool() of a CUDA tensor, any blocking copy, fails the
    # run. The epoch's one sync (loss and gradient norm, read once it has ended) is let
    # through. The first step of each epoch is exempt: it follows the permutation's copy.
    real_epoch, real_norm = fit_module.train_one_epoch, loop_module._grad_norm
    synced: list[int] = []

    def train_one_epoch(*args, **kwargs):
        on_step = kwargs["on_step"]

        def step() -> None:
            on_step()
            torch.cuda.set_sync_debug_mode("error")
            synced.append(1)

        return real_epoch(*args, **{**kwargs, "on_step": step})

    def grad_norm(model):
        torch.cuda.set_sync_debug_mode("default")
        return real_norm(model)

    monkeypatch.setattr(fit_module, "train_one_epoch", train_one_epoch)
    monkeypatch.setattr(loop_module, "_grad_norm", grad_norm)
    try:
        result = run(tmp_path, "train.device=cuda", *overrides)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert len(synced) == 3 * math.ceil(N_TRAIN / 48)
    assert all(math.isfinite(r["train/loss"]) for r in result.history)
