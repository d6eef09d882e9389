"""The training loop end to end: ``fit(config)`` on tiny configs, read back from what it leaves.

Every run is a few epochs on a small synthetic set (or a bundled one) in ``tmp_path``; the
slowest part of the file is the first fit of the session (imports).
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing import event_accumulator as ea

import logreg_torch.train as train_module
from logreg_torch.checkpoint import load_checkpoint
from logreg_torch.config import Config, ConfigError, load_config
from logreg_torch.data import prepare
from logreg_torch.losses import binary_cross_entropy_with_logits
from logreg_torch.model import MLP, LogisticRegression, build_model
from logreg_torch.runtime import resolve_device, resolve_runtime
from logreg_torch.train import (
    FitResult,
    TrainingError,
    fit,
    make_objective,
    predict_proba,
)

# 200 rows, val_fraction 0.2 -> 160 training rows.
TINY = ("data.source=synthetic", "data.n_samples=200", "data.n_features=5",
        "data.n_informative=3", "train.epochs=3", "train.batch_size=48",
        "log.histogram_every=0")
N_TRAIN = 160
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
MLP_DROPOUT = ("model.name=mlp", "model.hidden=[8]", "model.dropout=0.3", "optim.name=adam",
               "optim.lr=0.01")


@pytest.fixture(autouse=True)
def no_figures(monkeypatch) -> None:
    # Rendering the end-of-run matplotlib figures is most of a tiny fit's time; they are
    # tested with the TensorBoard run folder (tests/test_tracking_run.py).
    monkeypatch.setattr("logreg_torch.tracking.figures_available", lambda: False)


def config(tmp_path, *overrides: str, name: str = "run") -> Config:
    return load_config(None, [*TINY, f"log.run_dir={tmp_path / name}", *overrides])


def run(tmp_path, *overrides: str, name: str = "run") -> FitResult:
    return fit(config(tmp_path, *overrides, name=name), quiet=True)


def params(result: FitResult) -> list[torch.Tensor]:
    return [p.detach().clone() for p in result.model.parameters()]


def bitwise_equal(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


# ----------------------------------------------------------------------------- models


@pytest.mark.parametrize(("name", "cls"), [("logistic", LogisticRegression), ("mlp", MLP)])
def test_model_name_picks_the_model_and_both_train_on_our_loss(tmp_path, name, cls) -> None:
    cfg = config(tmp_path, f"model.name={name}", "model.hidden=[8]", "train.batch_size=null",
                 "optim.name=adam", "optim.lr=0.05", "train.epochs=5")
    result = fit(cfg)
    assert type(result.model) is cls

    # Full batch: the first epoch's loss is our BCE of the freshly built model on the train
    # split (fit seeds torch before building it, so the same seed rebuilds the same model).
    data = prepare(cfg.data, cfg.train.seed)
    torch.manual_seed(cfg.train.seed)
    initial = build_model(name, 5, [8], 0.0)
    X, y = data.train
    with torch.no_grad():
        expected = float(binary_cross_entropy_with_logits(initial(X), y))
    losses = [r["train/loss"] for r in result.history]
    assert losses[0] == pytest.approx(expected, rel=1e-6)
    assert losses[-1] < losses[0] - 0.01

    # val/loss is the same criterion on the val split.
    Xv, yv = data.val
    result.model.eval()
    with torch.no_grad():
        val = float(binary_cross_entropy_with_logits(result.model(Xv), yv))
    assert result.history[-1]["val/loss"] == pytest.approx(val, rel=1e-5)


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
                      [f"log.run_dir={tmp_path / 'run'}", f"train.precision={precision}"])
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


# ----------------------------------------------------------------------------- TensorBoard


def test_scalars_each_epoch_match_history(tmp_path) -> None:
    result = run(tmp_path, "train.epochs=4", "optim.name=sgd", "optim.lr=0.1",
                 "optim.scheduler=step", "optim.step_size=2")
    acc = ea.EventAccumulator(str(result.run_dir), size_guidance={ea.SCALARS: 0}).Reload()
    for tag in ("train/loss", "val/loss", "val/accuracy", "lr"):
        events = acc.Scalars(tag)
        assert [e.step for e in events] == [1, 2, 3, 4]
        expected = [r[tag] for r in result.history]
        # Event files hold float32.
        assert [e.value for e in events] == pytest.approx(expected, rel=1e-6, abs=1e-7)
    assert [e.value for e in acc.Scalars("train/lr")] == pytest.approx([0.1, 0.1, 0.05, 0.05])


# ----------------------------------------------------------------------------- checkpoints


def test_last_and_best_checkpoints_hold_the_whole_state(tmp_path) -> None:
    cfg = config(tmp_path, "train.epochs=4", "optim.lr=0.2")
    result = fit(cfg)
    data = prepare(cfg.data, cfg.train.seed)
    for name in ("last.pt", "best.pt"):
        path = result.run_dir / name
        state = torch.load(path, map_location="cpu", weights_only=True)
        for key in ("model", "optimizer", "scheduler", "epoch", "step", "rng", "config",
                    "preprocessing", "label_map"):
            assert key in state, f"{name} lacks {key}"
        assert state["config"] == dataclasses.asdict(cfg)
        assert state["preprocessing"] == data.preprocessing
        assert state["label_map"] == data.label_map
        assert state["optimizer"]["state"], "optimizer state (Adam moments) is missing"
        assert isinstance(state["rng"]["torch"], torch.Tensor)
        assert load_checkpoint(path)["epoch"] == state["epoch"]

    last = torch.load(result.run_dir / "last.pt", weights_only=True)
    assert last["epoch"] == 4 and last["step"] == 4 * math.ceil(N_TRAIN / 48)
    for key, value in result.model.state_dict().items():
        assert torch.equal(last["model"][key], value)

    best = torch.load(result.run_dir / "best.pt", weights_only=True)
    val_losses = [r["val/loss"] for r in result.history]
    assert best["epoch"] == 1 + int(np.argmin(val_losses)) == result.best["epoch"]


# ----------------------------------------------------------------------------- resume


@pytest.mark.parametrize("overrides", [("optim.name=adam",), MLP_DROPOUT],
                         ids=["adam-minibatch", "mlp-dropout"])
def test_resume_equals_an_uninterrupted_run(tmp_path, overrides) -> None:
    full = run(tmp_path, *overrides, "train.epochs=5", name="full")
    run(tmp_path, *overrides, "train.epochs=2", name="part")
    resumed = fit(load_config(None, [*TINY, *overrides, "train.epochs=5",
                                     f"train.resume={tmp_path / 'part' / 'last.pt'}"]))
    assert resumed.run_dir == tmp_path / "part"
    assert bitwise_equal(params(full), params(resumed))
    assert resumed.history == full.history
    assert torch.load(tmp_path / "part" / "last.pt", weights_only=True)["epoch"] == 5


def test_resume_restores_the_rng_that_dropout_draws_from(tmp_path, monkeypatch) -> None:
    # The control for the test above: without the RNG restore, dropout masks differ.
    full = run(tmp_path, *MLP_DROPOUT, "train.epochs=4", name="full")
    run(tmp_path, *MLP_DROPOUT, "train.epochs=2", name="part")
    monkeypatch.setattr(train_module, "set_rng_state", lambda state: None)
    resumed = fit(load_config(None, [*TINY, *MLP_DROPOUT, "train.epochs=4",
                                     f"train.resume={tmp_path / 'part' / 'last.pt'}"]))
    assert not bitwise_equal(params(full), params(resumed))


def test_same_seed_same_weights(tmp_path) -> None:
    a = run(tmp_path, *MLP_DROPOUT, name="a")
    b = run(tmp_path, *MLP_DROPOUT, name="b")
    c = run(tmp_path, *MLP_DROPOUT, "train.seed=1", name="c")
    assert bitwise_equal(params(a), params(b))
    assert a.history == b.history
    assert not bitwise_equal(params(a), params(c))


# ----------------------------------------------------------------------------- failures


def test_diverging_loss_stops_with_training_error(tmp_path) -> None:
    # Full-batch SGD with lr 1e38: epoch 1 starts from zeros (loss ln 2) and jumps to weights
    # ~1e37; the logits of epoch 2 overflow float32.
    with pytest.raises(TrainingError) as info:
        run(tmp_path, "optim.name=sgd", "optim.lr=1e38", "train.batch_size=null",
            "train.epochs=10")
    message = str(info.value)
    last = tmp_path / "run" / "last.pt"
    assert "epoch 2" in message
    assert f"last good checkpoint: {last}" in message
    assert "\n" not in message
    state = load_checkpoint(last)
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_diverging_first_epoch_says_no_checkpoint_yet(tmp_path) -> None:
    with pytest.raises(TrainingError, match="epoch 1 .*none was written yet"):
        run(tmp_path, "optim.name=sgd", "optim.lr=1e38", "optim.momentum=0.9",
            "train.batch_size=8", "train.epochs=3")
    assert not (tmp_path / "run" / "last.pt").exists()


def test_cuda_without_cuda_is_a_config_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="train.device='cuda' but CUDA is not available"):
        run(tmp_path, "train.device=cuda")
    with pytest.raises(ConfigError, match="cuda:1"):
        resolve_runtime("cuda:1", "fp32")
    assert resolve_device("auto") == torch.device("cpu")
    assert not (tmp_path / "run").exists()


def test_auto_device_picks_what_is_there(tmp_path) -> None:
    result = run(tmp_path, "train.device=auto", "train.epochs=1")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert {p.device.type for p in result.model.parameters()} == {expected}


@pytest.mark.cuda
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_fit_on_cuda(tmp_path, precision) -> None:
    result = run(tmp_path, "train.device=cuda", f"train.precision={precision}",
                 "train.epochs=3", *MLP_DROPOUT[:3])
    assert {p.device.type for p in result.model.parameters()} == {"cuda"}
    losses = [r["train/loss"] for r in result.history]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    # The checkpoint loads on a CPU-only reader.
    assert load_checkpoint(result.run_dir / "last.pt")["model"]["net.0.weight"].device.type == "cpu"


# ----------------------------------------------------------------------------- options


def test_early_stopping_stops_after_patience(tmp_path) -> None:
    # A min_delta no epoch can beat: epoch 1 improves on inf, then 2 epochs without.
    result = run(tmp_path, "train.epochs=20", "train.early_stopping_patience=2",
                 "train.early_stopping_min_delta=1e9")
    assert [r["epoch"] for r in result.history] == [1, 2, 3]
    assert result.stopped_early
    assert load_checkpoint(result.run_dir / "last.pt")["epoch"] == 3
    assert load_checkpoint(result.run_dir / "best.pt")["epoch"] == 1

    no_patience = run(tmp_path, "train.epochs=5", "train.early_stopping_min_delta=1e9",
                      name="off")
    assert len(no_patience.history) == 5 and not no_patience.stopped_early


def test_pos_weight_balanced(tmp_path) -> None:
    imbalanced = ("data.weights=[0.8,0.2]", "data.n_samples=500", "optim.name=lbfgs",
                  "optim.lr=1", "train.batch_size=null", "train.epochs=3")
    cfg = config(tmp_path, *imbalanced, "loss.pos_weight=balanced")
    X, y = prepare(cfg.data, cfg.train.seed).train
    n_pos = float(y.sum())
    pos_weight = (len(y) - n_pos) / n_pos
    objective = make_objective(cfg, y, torch.device("cpu"), torch.float32)
    assert float(objective.pos_weight) == pytest.approx(pos_weight)
    assert pos_weight > 3  # 80/20

    balanced = fit(cfg)
    plain = run(tmp_path, *imbalanced, name="plain")
    p_plain = predict_proba(plain.model, X).double()
    p_balanced = predict_proba(balanced.model, X).double()
    pos, neg = y == 1, y == 0
    # At the optimum the bias gradient is 0: sum of w_i (p_i - y_i) = 0, with w = pos_weight
    # on positives. Unweighted that makes the mean probability the share of positives.
    assert float(p_plain.mean()) == pytest.approx(float(y.mean()), abs=1e-4)
    assert float(p_balanced[neg].sum()) == pytest.approx(
        pos_weight * float((1 - p_balanced[pos]).sum()), rel=1e-3)
    # Weighting the rare class up moves predictions towards it.
    assert float(p_balanced.mean()) > float(p_plain.mean()) + 0.05
    assert balanced.history[-1]["val/recall"] > plain.history[-1]["val/recall"]


def _weight(result: FitResult) -> torch.Tensor:
    return result.model.linear.weight.detach().flatten()


def test_l2_shrinks_the_weights_but_not_the_bias(tmp_path) -> None:
    lbfgs = ("optim.name=lbfgs", "optim.lr=1", "train.batch_size=null", "train.epochs=2")
    none = run(tmp_path, *lbfgs, name="none")
    some = run(tmp_path, *lbfgs, "loss.l2=0.1", name="some")
    huge = run(tmp_path, *lbfgs, "loss.l2=1e4", name="huge")
    norms = [float(_weight(r).norm()) for r in (none, some, huge)]
    assert norms[0] > norms[1] > norms[2]
    assert norms[2] < 1e-3
    # The bias is never penalised: with w ~ 0 it fits the share of positives.
    cfg = config(tmp_path, *lbfgs)
    y = prepare(cfg.data, cfg.train.seed).train[1]
    assert float(torch.sigmoid(huge.model.linear.bias.detach())) == pytest.approx(float(y.mean()),
                                                                         abs=1e-3)


def test_l1_shrinks_the_l1_norm(tmp_path) -> None:
    plain = run(tmp_path, "train.epochs=10", name="plain")
    l1 = run(tmp_path, "train.epochs=10", "loss.l1=0.05", name="l1")
    assert float(_weight(l1).abs().sum()) < 0.7 * float(_weight(plain).abs().sum())
    # The 2 noise features (of 5) are pushed towards 0 harder than the informative ones.
    assert float(_weight(l1)[3:].abs().max()) < 0.05


def test_label_smoothing_trains_on_softened_targets(tmp_path) -> None:
    common = ("data.source=breast_cancer", "optim.name=lbfgs", "optim.lr=1",
              "train.batch_size=null", "train.epochs=2", "loss.l2=1e-3")
    plain = run(tmp_path, *common, name="plain")
    smooth = run(tmp_path, *common, "loss.label_smoothing=0.2", name="smooth")
    cfg = config(tmp_path, *common)
    X, y = prepare(cfg.data, cfg.train.seed).train
    soft = y * 0.8 + 0.1
    with torch.no_grad():
        logits = smooth.model(X)
        # L-BFGS reports the loss at its final point: our BCE against targets 0.1 / 0.9.
        assert smooth.history[-1]["train/loss"] == pytest.approx(
            float(binary_cross_entropy_with_logits(logits, soft)), rel=1e-5)
        assert smooth.history[-1]["train/loss"] > 1.2 * float(
            binary_cross_entropy_with_logits(logits, y))
    p_plain = predict_proba(plain.model, X).double()
    p_smooth = predict_proba(smooth.model, X).double()
    # The bias is not penalised, so at the optimum the mean probability is the mean target.
    assert float(p_smooth.mean()) == pytest.approx(float(soft.mean()), abs=1e-4)
    # Softer targets, less confident predictions.
    assert float((p_smooth - 0.5).abs().mean()) < float((p_plain - 0.5).abs().mean()) - 0.05
    assert float(logits.abs().max()) < float(plain.model(X).detach().abs().max())


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


def test_bf16_on_cpu(tmp_path) -> None:
    bf16 = run(tmp_path, "train.precision=bf16", "train.device=cpu", name="bf16")
    fp32 = run(tmp_path, "train.precision=fp32", "train.device=cpu", name="fp32")
    assert {p.dtype for p in bf16.model.parameters()} == {torch.float32}
    losses = [r["train/loss"] for r in bf16.history]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    # Autocast really ran in bfloat16: the losses round differently from float32's.
    assert losses != [r["train/loss"] for r in fp32.history]
    assert losses == pytest.approx([r["train/loss"] for r in fp32.history], rel=0.05)


# ----------------------------------------------------------------------------- batches


def test_minibatches_are_slices_without_a_dataloader(tmp_path, monkeypatch) -> None:
    def no_loader(*args, **kwargs):
        raise AssertionError("fit must not build a DataLoader")

    monkeypatch.setattr(torch.utils.data.DataLoader, "__init__", no_loader)
    sizes: list[int] = []
    model_loss = train_module.Objective.model_loss

    def record(self, model, features, targets):
        if model.training:
            sizes.append(len(features))
        return model_loss(self, model, features, targets)

    monkeypatch.setattr(train_module.Objective, "model_loss", record)
    result = run(tmp_path, "train.epochs=3", "train.batch_size=48")
    per_epoch = math.ceil(N_TRAIN / 48)
    assert [r["step"] for r in result.history] == [per_epoch, 2 * per_epoch, 3 * per_epoch]
    assert sizes == [48, 48, 48, 16] * 3

    sizes.clear()
    full = run(tmp_path, "train.epochs=2", "train.batch_size=null", name="full")
    assert [r["step"] for r in full.history] == [1, 2]
    assert sizes == [N_TRAIN, N_TRAIN]


# ----------------------------------------------------------------------------- run folder


def test_default_run_folder_and_saved_config(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = load_config(None, [*TINY, "train.epochs=1", "log.name=tiny"])
    result = fit(cfg)
    assert re.fullmatch(r"tiny-\d{8}-\d{6}", result.run_dir.name)
    assert result.run_dir.parent == Path("runs")
    assert (tmp_path / result.run_dir / "last.pt").is_file()
    assert load_config(result.run_dir / "config.yaml") == cfg


def test_two_runs_in_the_same_second_get_different_folders(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(time, "strftime", lambda fmt, *args: "20250101-120000")
    cfg = load_config(None, [*TINY, "train.epochs=1", "log.name=same"])
    first, second = fit(cfg), fit(cfg)
    assert first.run_dir.name == "same-20250101-120000"
    assert second.run_dir.name == "same-20250101-120000-2"
    assert (tmp_path / first.run_dir / "last.pt").is_file()
    assert (tmp_path / second.run_dir / "last.pt").is_file()


# ----------------------------------------------------------------------------- Ctrl-C


def _interrupt_on_call(monkeypatch, call: int, after_steps: int | None = None) -> None:
    """Make the ``call``-th train_one_epoch raise KeyboardInterrupt: at once, or mid-epoch
    after ``after_steps`` optimizer steps."""
    real = train_module.train_one_epoch
    calls = {"n": 0}

    def train_one_epoch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] != call:
            return real(*args, **kwargs)
        if after_steps is None:
            raise KeyboardInterrupt
        count, on_step = {"n": 0}, kwargs["on_step"]

        def step() -> None:
            on_step()
            count["n"] += 1
            if count["n"] == after_steps:
                raise KeyboardInterrupt

        return real(*args, **{**kwargs, "on_step": step})

    monkeypatch.setattr(train_module, "train_one_epoch", train_one_epoch)


def test_ctrl_c_saves_last_and_says_how_to_resume(tmp_path, monkeypatch) -> None:
    full = run(tmp_path, "train.epochs=5", name="full")
    _interrupt_on_call(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt) as info:
        run(tmp_path, "train.epochs=5")
    last = tmp_path / "run" / "last.pt"
    message = str(info.value)
    assert f"train.resume={last}" in message
    assert "logreg-torch train" in message
    assert load_checkpoint(last)["epoch"] == 2

    monkeypatch.undo()
    resumed = fit(load_config(None, [*TINY, "train.epochs=5", f"train.resume={last}"]))
    assert bitwise_equal(params(full), params(resumed))


def test_ctrl_c_mid_epoch_keeps_the_last_whole_epoch(tmp_path, monkeypatch) -> None:
    full = run(tmp_path, "train.epochs=5", name="full")
    _interrupt_on_call(monkeypatch, 3, after_steps=2)  # 2 of the 4 steps of epoch 3 done
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, "train.epochs=5")
    last = tmp_path / "run" / "last.pt"
    state = load_checkpoint(last)
    # last.pt of epoch 2 is kept as written, so resuming replays whole epochs exactly.
    assert state["epoch"] == 2 and state["step"] == 2 * math.ceil(N_TRAIN / 48)
    monkeypatch.undo()
    resumed = fit(load_config(None, [*TINY, "train.epochs=5", f"train.resume={last}"]))
    assert bitwise_equal(params(full), params(resumed))
    assert resumed.history == full.history


def test_ctrl_c_writes_last_when_no_checkpoint_is_due(tmp_path, monkeypatch) -> None:
    every = "train.checkpoint_every=5"
    full = run(tmp_path, "train.epochs=5", every, name="full")
    _interrupt_on_call(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, "train.epochs=5", every)
    last = tmp_path / "run" / "last.pt"
    assert load_checkpoint(last)["epoch"] == 2
    monkeypatch.undo()
    resumed = fit(load_config(None, [*TINY, "train.epochs=5", every, f"train.resume={last}"]))
    assert bitwise_equal(params(full), params(resumed))
