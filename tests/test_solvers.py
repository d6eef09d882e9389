"""Optimizers, schedulers and the full-batch solver inside fit: L-BFGS reaches sklearn's
optimum; each scheduler moves the learning rate as torch's does."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_fit import (  # tests/ is on sys.path under pytest
    CONFIGS,
    run,
)

from logreg_torch.checkpoint import load_checkpoint
from logreg_torch.config import load_config
from logreg_torch.data import prepare
from logreg_torch.solvers import kernel_options, load_optimizer_state, make_optimizer
from logreg_torch.train import (
    fit,
    predict_proba,
)

pytestmark = pytest.mark.usefixtures("no_figures")

# ----------------------------------------------------------------------------- sklearn parity


@pytest.fixture(scope="module")
def sklearn_probs() -> np.ndarray:
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression as SkLogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = load_breast_cancer(return_X_y=True)
    pipe = make_pipeline(StandardScaler(), SkLogisticRegression(C=1.0, tol=1e-10, max_iter=10000))
    pipe.fit(X, y)
    # sklearn's target 0 is "malignant", which is our class 1.
    assert list(load_breast_cancer().target_names) == ["malignant", "benign"]
    return pipe.predict_proba(X)[:, 0]


@pytest.mark.parametrize(("precision", "tol"), [("fp64", 1e-5), ("fp32", 1e-3)])
def test_lbfgs_reaches_sklearn_optimum(tmp_path, sklearn_probs, precision, tol) -> None:
    # float32 stops at ~2e-4 from sklearn's optimum: its gradient is only accurate to ~1e-6,
    # and the smallest curvature (l2 = 1/569) turns that into ~1e-4 in probabilities.
    from sklearn.datasets import load_breast_cancer

    cfg = load_config(CONFIGS / "sklearn_parity.yaml",
                      [f"log.run_dir={tmp_path / 'run'}", f"train.precision={precision}",
                       "train.device=cpu"])  # compared with CPU tensors, at float32's floor
    result = fit(cfg)
    data = prepare(cfg.data, cfg.train.seed, dtype=torch.float64)
    assert data.label_map == {"benign": 0, "malignant": 1}
    X, y = data.train
    assert len(X) == 569 and len(data.val[0]) == 0 and len(data.test[0]) == 0
    X_raw = load_breast_cancer().data
    # Same rows in the same order, standardized with the population std as StandardScaler.
    assert np.array_equal(np.asarray(data.preprocessing["mean"]), X_raw.mean(0))
    np.testing.assert_allclose(data.preprocessing["std"], X_raw.std(0, ddof=0), rtol=1e-12)
    np.testing.assert_allclose(X.numpy(), (X_raw - X_raw.mean(0)) / X_raw.std(0), atol=1e-12)

    dtype = next(result.model.parameters()).dtype
    assert dtype == (torch.float64 if precision == "fp64" else torch.float32)
    probs = predict_proba(result.model, X.to(dtype)).double().numpy()
    assert np.abs(probs - sklearn_probs).max() < tol

def test_step_scheduler(tmp_path) -> None:
    result = run(tmp_path, "optim.name=sgd", "optim.lr=0.1", "optim.scheduler=step",
                 "optim.step_size=2", "optim.gamma=0.5", "train.epochs=5")
    assert [r["lr"] for r in result.history] == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025])


def test_cosine_scheduler(tmp_path) -> None:
    result = run(tmp_path, "optim.lr=0.1", "optim.scheduler=cosine", "train.epochs=4")
    expected = [0.05 * (1 + math.cos(math.pi * e / 4)) for e in range(4)]
    assert [r["lr"] for r in result.history] == pytest.approx(expected, rel=1e-9)
    last = load_checkpoint(result.run_dir / "last.pt")
    assert last["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_plateau_scheduler(tmp_path) -> None:
    # A learning rate so small that the val loss never moves: after patience 2 the lr halves.
    result = run(tmp_path, "optim.name=sgd", "optim.lr=1e-6", "optim.scheduler=plateau",
                 "optim.gamma=0.5", "train.epochs=6")
    assert [r["lr"] for r in result.history] == pytest.approx([1e-6] * 4 + [5e-7] * 2,
                                                              rel=1e-12)


def test_plateau_scheduler_keeps_lr_while_improving(tmp_path) -> None:
    result = run(tmp_path, "optim.lr=0.05", "optim.scheduler=plateau", "train.epochs=4")
    losses = [r["val/loss"] for r in result.history]
    assert losses == sorted(losses, reverse=True)  # improving every epoch
    assert [r["lr"] for r in result.history] == [0.05] * 4


# ----------------------------------------------------------------------------- optimizer kernels


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_cpu_optimizers_keep_torchs_default_kernels(tmp_path, name) -> None:
    # The fused kernels are for CUDA; on the CPU the optimizer is torch's default, so that
    # CPU results stay bit for bit what they were.
    cfg = load_config(None, [f"optim.name={name}"])
    optimizer = make_optimizer(cfg, torch.nn.Linear(3, 1))
    assert not optimizer.defaults.get("fused") and optimizer.defaults.get("foreach") is None
    assert kernel_options([torch.zeros(1)]) == {} and kernel_options([]) == {}


@pytest.mark.cuda
@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_cuda_optimizers_are_fused_and_step_as_torchs_default(name) -> None:
    cfg = load_config(None, [f"optim.name={name}", "optim.lr=0.1", "optim.weight_decay=0.01",
                             "optim.momentum=0.9"])
    torch.manual_seed(0)
    model = torch.nn.Linear(7, 1).cuda()
    reference = torch.nn.Linear(7, 1).cuda()
    reference.load_state_dict(model.state_dict())
    fused = make_optimizer(cfg, model)
    assert fused.defaults["fused"] is True
    plain = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[name]
    kwargs = {"momentum": 0.9} if name == "sgd" else {}
    default = plain(reference.parameters(), lr=0.1, weight_decay=0.01, **kwargs)
    x, y = torch.randn(64, 7, device="cuda"), torch.rand(64, device="cuda")
    for _ in range(5):
        for net, opt in ((model, fused), (reference, default)):
            opt.zero_grad()
            torch.nn.functional.binary_cross_entropy_with_logits(net(x)[:, 0], y).backward()
            opt.step()
    for a, b in zip(model.parameters(), reference.parameters(), strict=True):
        # one kernel against torch's foreach ops: the same update, rounded in another order
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_a_resume_keeps_this_devices_kernels_not_the_checkpoints() -> None:
    # A checkpoint written by a GPU run holds fused (and, with train.cuda_graphs, capturable)
    # Adam groups; resumed on the CPU the optimizer must stay torch's CPU default, with the
    # moments and step count of the checkpoint.
    torch.manual_seed(0)
    gpu_like = torch.optim.Adam(torch.nn.Linear(3, 1).parameters(), lr=0.1)
    gpu_like.param_groups[0]["params"][0].grad = torch.ones(1, 3)
    gpu_like.param_groups[0]["params"][1].grad = torch.ones(1)
    gpu_like.step()
    saved = gpu_like.state_dict()
    for group in saved["param_groups"]:
        group.update(fused=True, capturable=True)
    cpu = make_optimizer(load_config(None, ["optim.lr=0.1"]), torch.nn.Linear(3, 1))
    load_optimizer_state(cpu, saved)
    group = cpu.param_groups[0]
    assert not group["fused"] and not group["capturable"] and group["lr"] == 0.1
    for mine, theirs in zip(cpu.state.values(), saved["state"].values(), strict=True):
        assert torch.equal(mine["exp_avg"], theirs["exp_avg"]) and float(mine["step"]) == 1.0
