"""Our losses in the libraries people plug a BCE criterion into, against torch's in the same
code: skorch, PyTorch Lightning, Opacus (the ``clients`` extra; CI installs it)."""

from __future__ import annotations

import pytest
import torch

from logreg_torch.losses import BCEWithLogitsLoss

CRITERIA = {"torch": torch.nn.BCEWithLogitsLoss, "ours": BCEWithLogitsLoss}


def _data(n=32, d=4):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=gen)
    y = (x[:, 0] + 0.5 * torch.randn(n, generator=gen) > 0).float()
    return x, y


class _Logits(torch.nn.Module):
    def __init__(self, d=4):
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(d, 1)

    def forward(self, x):
        return self.linear(x).squeeze(-1)


def _close(a, b):
    torch.testing.assert_close(torch.as_tensor(a), torch.as_tensor(b), rtol=1e-5, atol=1e-6)


def test_skorch_binary_classifier_with_our_criterion_and_no_other_change():
    skorch = pytest.importorskip("skorch")
    x, y = _data()

    def run(criterion):
        torch.manual_seed(0)
        net = skorch.NeuralNetBinaryClassifier(_Logits, criterion=criterion, max_epochs=3,
                                               lr=0.5, batch_size=8, train_split=None,
                                               verbose=0)
        net.fit(x.numpy(), y.numpy())
        return net.predict_proba(x.numpy()), net.history[:, "train_loss"]

    (proba_t, hist_t), (proba_o, hist_o) = run(CRITERIA["torch"]), run(CRITERIA["ours"])
    assert proba_o.shape == (32, 2)
    _close(proba_o, proba_t)
    _close(hist_o, hist_t)


def test_lightning_trainer_three_epochs_same_weights():
    lightning = pytest.importorskip("lightning")
    x, y = _data()

    class Module(lightning.LightningModule):
        def __init__(self, criterion):
            super().__init__()
            self.model, self.criterion = _Logits(), criterion

        def training_step(self, batch, _):
            features, targets = batch
            return self.criterion(self.model(features), targets)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.5)

    def run(criterion):
        module = Module(criterion())
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)
        trainer = lightning.Trainer(max_epochs=3, accelerator="cpu", devices=1, logger=False,
                                    enable_checkpointing=False, enable_progress_bar=False,
                                    enable_model_summary=False)
        trainer.fit(module, loader)
        assert trainer.current_epoch == 3
        return [p.detach() for p in module.model.parameters()]

    start = [p.detach() for p in _Logits().parameters()]
    theirs, ours = run(CRITERIA["torch"]), run(CRITERIA["ours"])
    assert not torch.equal(theirs[0], start[0])  # it trained
    for a, b in zip(theirs, ours, strict=True):
        _close(b, a)


@pytest.mark.parametrize("mode", ["hooks", "ghost"])
def test_opacus_make_private(mode):
    """DP-SGD without noise: hook mode computes per-sample gradients with hooks on the layers;
    ghost (fast gradient clipping) wraps the criterion and calls it with reduction="none"."""
    opacus = pytest.importorskip("opacus")
    x, y = _data()

    def run(criterion_cls):
        model = _Logits()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)
        engine = opacus.PrivacyEngine()
        criterion = criterion_cls()
        kwargs = dict(module=model, optimizer=optimizer, data_loader=loader, noise_multiplier=0.0,
                      max_grad_norm=0.1, poisson_sampling=False, grad_sample_mode=mode)
        if mode == "ghost":
            model, optimizer, criterion, loader = engine.make_private(criterion=criterion,
                                                                      **kwargs)
        else:
            model, optimizer, loader = engine.make_private(**kwargs)
        for features, targets in loader:
            optimizer.zero_grad()
            loss = criterion(model(features), targets)
            loss.backward()
            optimizer.step()
        return [p.detach().clone() for p in model.parameters()]

    theirs, ours = run(CRITERIA["torch"]), run(CRITERIA["ours"])
    for a, b in zip(theirs, ours, strict=True):
        _close(b, a)
