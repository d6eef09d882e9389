"""The training loop end to end: ``fit(config)`` on tiny configs, read back from what it leaves.

Every run is a few epochs on a small synthetic set (or a bundled one) in ``tmp_path``; the
slowest part of the file is the first fit of the session (imports).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing import event_accumulator as ea

import logreg_torch.fit as fit_module
from logreg_torch import cli
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
)

pytestmark = pytest.mark.usefixtures("no_figures")

# 200 rows, val_fraction 0.2 -> 160 training rows. On the CPU on every machine: these tests
# compare with CPU tensors and bit for bit across runs (resume, seeds); the CUDA tests below
# ask for CUDA themselves.
TINY = ("data.source=synthetic", "data.n_samples=200", "data.n_features=5",
        "data.n_informative=3", "train.epochs=3", "train.batch_size=48",
        "log.histogram_every=0", "train.device=cpu")
N_TRAIN = 160
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
MLP_DROPOUT = ("model.name=mlp", "model.hidden=[8]", "model.dropout=0.3", "optim.name=adam",
               "optim.lr=0.01")


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


# ----------------------------------------------------------------------------- TensorBoard


def test_scalars_each_epoch_match_history(tmp_path) -> None:
    result = run(tmp_path, "train.epochs=4", "optim.name=sgd", "optim.lr=0.1",
                 "optim.scheduler=step", "optim.step_size=2")
    acc = ea.EventAccumulator(str(result.run_dir), size_guidance={ea.SCALARS: 0}).Reload()
    for key, tag in (("train/loss", "train/loss"), ("val/loss", "val/loss"),
                     ("val/accuracy", "val/accuracy"), ("lr", "train/lr")):
        events = acc.Scalars(tag)
        assert [e.step for e in events] == [1, 2, 3, 4]
        expected = [r[key] for r in result.history]
        # Event files hold float32.
        assert [e.value for e in events] == pytest.approx(expected, rel=1e-6, abs=1e-7)
    assert [e.value for e in acc.Scalars("train/lr")] == pytest.approx([0.1, 0.1, 0.05, 0.05])


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
    monkeypatch.setattr(fit_module, "set_rng_state", lambda state: None)
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
    with pytest.raises(ConfigError, match="train.device='cuda' but this machine has no CUDA"):
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


CUDA = "train.device=cuda"


@pytest.mark.cuda
@pytest.mark.parametrize("overrides", [("optim.name=adam",), MLP_DROPOUT, ("optim.name=sgd",)],
                         ids=["adam", "mlp-dropout", "sgd"])
def test_a_cuda_run_is_the_cpu_run(tmp_path, overrides) -> None:
    # The same batches (the permutation is drawn on the CPU for every device), the same
    # model; the GPU sums float32 in another order and runs torch's fused optimizer kernels:
    # equal to float32 rounding, grown over 3 epochs. (Dropout draws from each device's own
    # generator: the MLP is compared on its losses' trend only.)
    cpu = run(tmp_path, *overrides, name="cpu")
    gpu = run(tmp_path, *overrides, CUDA, name="gpu")
    if overrides == MLP_DROPOUT:
        losses = [r["train/loss"] for r in gpu.history]
        assert losses[-1] < losses[0] and all(map(math.isfinite, losses))
        return
    for a, b in zip(cpu.history, gpu.history, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), key
    for a, b in zip(params(cpu), params(gpu), strict=True):
        torch.testing.assert_close(b.cpu(), a, rtol=1e-4, atol=1e-5)


@pytest.mark.cuda
@pytest.mark.parametrize("overrides", [("optim.name=adam",), MLP_DROPOUT],
                         ids=["adam-minibatch", "mlp-dropout"])
def test_a_cuda_resume_is_the_uninterrupted_cuda_run(tmp_path, monkeypatch, overrides) -> None:
    # The checkpoint keeps the GPU's RNG: dropout masks after the resume are those the
    # uninterrupted run drew. The same kernels on the same GPU: held to 1e-6, not bit for bit.
    full = run(tmp_path, *overrides, CUDA, "train.epochs=4", name="full")
    run(tmp_path, *overrides, CUDA, "train.epochs=2", name="part")
    shutil.copytree(tmp_path / "part", tmp_path / "again")  # for the control below

    def resume(folder: str) -> FitResult:
        return fit(load_config(None, [*TINY, *overrides, CUDA, "train.epochs=4",
                                      f"train.resume={tmp_path / folder / 'last.pt'}"]))

    def same(result: FitResult) -> bool:
        return all(torch.allclose(a, b, rtol=1e-6, atol=1e-7)
                   for a, b in zip(params(full), params(result), strict=True))

    resumed = resume("part")
    assert same(resumed)
    assert [r["train/loss"] for r in resumed.history] == pytest.approx(
        [r["train/loss"] for r in full.history], rel=1e-6)
    if overrides == MLP_DROPOUT:  # the control: without the RNG restore the masks differ
        monkeypatch.setattr(fit_module, "set_rng_state", lambda state: None)
        assert not same(resume("again"))


@pytest.mark.cuda
def test_a_cuda_checkpoint_resumes_on_the_cpu_and_serves_the_cpu_commands(tmp_path,
                                                                         capsys) -> None:
    gpu = run(tmp_path, CUDA, "train.epochs=2", name="gpu")
    capsys.readouterr()
    assert cli.main(["evaluate", str(gpu.run_dir / "best.pt"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    for key in ("loss", "accuracy", "roc_auc"):  # the history's, computed on the GPU
        assert report[key] == pytest.approx(gpu.best[f"val/{key}"], rel=1e-5, abs=1e-6), key
    assert cli.main(["summary", str(gpu.run_dir), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["coefficients"][0]["name"] == "intercept"
    # TINY trains on the CPU: the GPU run goes on there, optimizer state and all, with the
    # CPU's default Adam rather than the GPU's fused kernel.
    def fused() -> bool:
        return load_checkpoint(gpu.run_dir / "last.pt")["optimizer"]["param_groups"][0]["fused"]

    assert fused() is True
    resumed = fit(load_config(None, [*TINY, "train.epochs=3",
                                     f"train.resume={gpu.run_dir / 'last.pt'}"]))
    assert {p.device.type for p in resumed.model.parameters()} == {"cpu"}
    assert len(resumed.history) == 3 and resumed.history[:2] == gpu.history
    assert not fused()


@pytest.mark.cuda
def test_train_compile_on_cuda_trains_the_eager_model(tmp_path) -> None:
    import torch._dynamo

    torch._dynamo.reset()
    compiled = run(tmp_path, CUDA, "train.compile=true", name="compiled")
    eager = run(tmp_path, CUDA, name="eager")
    for a, b in zip(params(compiled), params(eager), strict=True):
        # float32; inductor's generated kernels sum in their own order: a few ulp per step
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    torch._dynamo.reset()


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


def test_bf16_on_cpu(tmp_path) -> None:
    bf16 = run(tmp_path, "train.precision=bf16", "train.device=cpu", name="bf16")
    fp32 = run(tmp_path, "train.precision=fp32", "train.device=cpu", name="fp32")
    assert {p.dtype for p in bf16.model.parameters()} == {torch.float32}
    losses = [r["train/loss"] for r in bf16.history]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    # Autocast really ran in bfloat16: the losses round differently from float32's.
    assert losses != [r["train/loss"] for r in fp32.history]
    assert losses == pytest.approx([r["train/loss"] for r in fp32.history], rel=0.05)


# ----------------------------------------------------------------------------- Ctrl-C


def _interrupt_on_call(monkeypatch, call: int, after_steps: int | None = None) -> None:
    """Make the ``call``-th train_one_epoch raise KeyboardInterrupt: at once, or mid-epoch
    after ``after_steps`` optimizer steps."""
    real = fit_module.train_one_epoch
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

    monkeypatch.setattr(fit_module, "train_one_epoch", train_one_epoch)


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
