"""README claims of the Training section that no other module tested, each against a reference
that shares no code with the training loop: a plain loop over the full batch with torch's own
``binary_cross_entropy_with_logits`` and torch's optimizers, from the model's zero start.

Each test has a negative control: the reference with the claimed behaviour taken away (l1 on
the bias too, coupled weight decay, no line search, no clipping) lands far outside the
tolerance. tests/README.md maps every behavioural README claim to its test.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from logreg_torch.config import load_config
from logreg_torch.data import prepare
from logreg_torch.train import FitResult, fit

pytestmark = pytest.mark.usefixtures("no_figures")

# 200 rows (160 to train on), 5 features; float64 so that the references are held to 1e-10:
# both sides do the same arithmetic on the same full batch, our loss kernel against torch's
# (a few ulp apart), over a handful of steps that do not amplify rounding.
# The references run on the CPU, and so does the loop (on a GPU machine too).
TINY = ("data.source=synthetic", "data.n_samples=200", "data.n_features=5",
        "data.n_informative=3", "train.precision=fp64", "train.batch_size=null",
        "log.histogram_every=0", "train.device=cpu")
ATOL = 1e-10


def train(tmp_path: Path, *overrides: str) -> FitResult:
    name = "-".join(o.replace("=", "_").replace(".", "_") for o in overrides)[:80] or "run"
    return fit(load_config(None, [*TINY, *overrides, f"log.run_dir={tmp_path / name}"]))


def weights(result: FitResult) -> tuple[torch.Tensor, torch.Tensor]:
    return (result.model.linear.weight.detach().flatten(),
            result.model.linear.bias.detach().flatten())


def reference(make_optimizer: Callable, epochs: int, *overrides: str,
              penalty: Callable | None = None, clip: float | None = None,
              closure_steps: bool = False) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    """Full-batch training by hand: returns the final weight, bias and per-step grad norms."""
    cfg = load_config(None, [*TINY, *overrides])
    X, y = prepare(cfg.data, cfg.train.seed, dtype=torch.float64).train
    w = torch.zeros(X.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = make_optimizer([w, b])
    norms: list[float] = []

    def closure():
        optimizer.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(X @ w + b, y)
        if penalty is not None:
            loss = loss + penalty(w, b)
        loss.backward()
        return loss

    for _ in range(epochs):
        if closure_steps:
            optimizer.step(closure)
            continue
        closure()
        if clip is not None:
            norms.append(float(nn.utils.clip_grad_norm_([w, b], clip)))
        optimizer.step()
    return w.detach(), b.detach(), norms


def gap(result: FitResult, ref: tuple) -> float:
    w, b = weights(result)
    return max(float((w - ref[0]).abs().max()), float((b - ref[1]).abs().max()))


# ----------------------------------------------------------------------------- penalties


def test_l1_and_l2_are_on_the_weights_never_on_the_bias(tmp_path) -> None:
    # loss.l2 is lambda of lambda/2 * ||w||^2, loss.l1 lambda of lambda * ||w||_1. SGD on the
    # full batch, 5 epochs: each step's gradient holds the penalty's, so the weights tell.
    l1, l2, lr = 0.05, 0.3, 0.5
    run = ("optim.name=sgd", f"optim.lr={lr}", "train.epochs=5", f"loss.l1={l1}",
           f"loss.l2={l2}")
    result = train(tmp_path, *run)
    sgd = lambda params: torch.optim.SGD(params, lr=lr)  # noqa: E731

    def on_weights(w, b):
        return l2 / 2 * w.pow(2).sum() + l1 * w.abs().sum()

    assert gap(result, reference(sgd, 5, *run, penalty=on_weights)) < ATOL
    # Negative control: the same penalty on the bias too is another model.
    both = reference(sgd, 5, *run, penalty=lambda w, b: on_weights(w, b) + on_weights(b, w))
    assert gap(result, both) > 1e-3


# ----------------------------------------------------------------------------- optimizers


def test_adamw_decays_the_weights_decoupled(tmp_path) -> None:
    run = ("optim.name=adamw", "optim.lr=0.1", "optim.weight_decay=0.5", "train.epochs=8")
    result = train(tmp_path, *run)
    adamw = lambda params: torch.optim.AdamW(params, lr=0.1, weight_decay=0.5)  # noqa: E731
    assert gap(result, reference(adamw, 8, *run)) < ATOL
    # Negative control: Adam's coupled weight decay (an l2 term in the gradient) differs.
    adam = lambda params: torch.optim.Adam(params, lr=0.1, weight_decay=0.5)  # noqa: E731
    assert gap(result, reference(adam, 8, *run)) > 1e-3
    # And optim.name=adam is that coupled one.
    assert gap(train(tmp_path, *run, "optim.name=adam"), reference(adam, 8, *run)) < ATOL


def test_lbfgs_runs_a_strong_wolfe_line_search(tmp_path) -> None:
    # One epoch = one optimizer.step(closure) of up to optim.max_iter iterations. lr 3: a
    # first step that overshoots, which the line search shortens (at lr 1 every full step is
    # accepted on this problem and the two paths coincide).
    run = ("optim.name=lbfgs", "optim.lbfgs_lr=3", "optim.max_iter=6", "train.epochs=1")
    result = train(tmp_path, *run)

    def lbfgs(line_search):
        # as solvers.run_lbfgs sets it: iterations, not evaluations, are the budget, and the
        # loss-change test only fires on an exact stall
        return lambda params: torch.optim.LBFGS(
            params, lr=3, max_iter=6, max_eval=6 * 30, history_size=10,
            tolerance_change=torch.finfo(torch.float64).tiny, line_search_fn=line_search)

    assert gap(result, reference(lbfgs("strong_wolfe"), 1, *run, closure_steps=True)) < 1e-8
    # Negative control: without the line search (fixed steps of lr) the path is another one.
    assert gap(result, reference(lbfgs(None), 1, *run, closure_steps=True)) > 1e-3


def _max_gradient(result: FitResult, *overrides: str) -> float:
    """Largest |gradient| of the mean training loss at the model's final weights."""
    cfg = load_config(None, [*TINY, *overrides])
    X, y = prepare(cfg.data, cfg.train.seed, dtype=torch.float64).train
    w, b = (t.clone().requires_grad_() for t in weights(result))
    nn.functional.binary_cross_entropy_with_logits(X @ w + b, y).backward()
    return max(float(w.grad.abs().max()), float(b.grad.abs().max()))


def test_lbfgs_stops_on_optim_tol(tmp_path) -> None:
    # L-BFGS stops once the largest |gradient| falls below optim.tol (or progress stalls):
    # a loose tol stops early, with a gradient above a tight tol, in fewer iterations.
    run = ("optim.name=lbfgs", "optim.lr=1", "optim.max_iter=200", "train.epochs=1")
    loose = train(tmp_path, *run, "optim.tol=1e-2")
    tight = train(tmp_path, *run, "optim.tol=1e-9")
    state = {name: torch.load(r.run_dir / "last.pt", weights_only=True)["optimizer"]["state"][0]
             for name, r in (("loose", loose), ("tight", tight))}
    assert state["loose"]["n_iter"] < state["tight"]["n_iter"] < 200  # both stopped on tol
    assert 1e-6 < _max_gradient(loose, *run) <= 1e-2  # it stopped early: the control
    assert _max_gradient(tight, *run) < 1e-7


# ----------------------------------------------------------------------------- clipping


def test_gradient_clipping_clips_the_global_norm(tmp_path) -> None:
    # SGD with a large lr, so that the first gradients (norm ~0.4) exceed the clip of 0.05.
    run = ("optim.name=sgd", "optim.lr=2", "train.epochs=4", "train.grad_clip=0.05")
    result = train(tmp_path, *run)
    sgd = lambda params: torch.optim.SGD(params, lr=2)  # noqa: E731
    ref = reference(sgd, 4, *run, clip=0.05)
    assert max(ref[2]) > 0.05 * 4  # the clip really bit
    assert gap(result, ref) < ATOL
    # grad_norm in the history is the norm the optimizer used: after clipping (one step an
    # epoch, so each epoch's is the reference's step norm, clipped; torch's clip_grad_norm_
    # scales by clip / (norm + 1e-6), which leaves a clipped norm a hair under the clip).
    assert [r["grad_norm"] for r in result.history] == pytest.approx(
        [norm * min(1.0, 0.05 / (norm + 1e-6)) for norm in ref[2]], rel=1e-9)
    # Negative control: without clipping the weights are elsewhere.
    assert gap(result, reference(sgd, 4, *run)) > 1e-2


# ----------------------------------------------------------------------------- precision


def test_fp16_trains_with_a_grad_scaler(tmp_path) -> None:
    # Mixed fp16 (autocast) with torch's GradScaler: its state is in the checkpoint, updated
    # once per step (no inf/NaN step skipped here: the growth tracker counts every step), and
    # the model is the fp32 one up to fp16 rounding.
    minibatch = ("train.batch_size=48", "train.epochs=3", "optim.name=adam")
    half = train(tmp_path, "train.precision=fp16", *minibatch)
    single = train(tmp_path, "train.precision=fp32", *minibatch)
    scaler = torch.load(half.run_dir / "last.pt", weights_only=True)["scaler"]
    assert scaler is not None and scaler["scale"] == 2.0 ** 16
    assert scaler["_growth_tracker"] == 3 * 4  # 160 rows in batches of 48: 4 steps an epoch
    assert torch.load(single.run_dir / "last.pt", weights_only=True)["scaler"] is None
    for a, b in zip(weights(half), weights(single), strict=True):
        torch.testing.assert_close(a.double(), b.double(), rtol=0, atol=5e-3)
    assert half.model.linear.weight.dtype == torch.float32  # parameters stay fp32


# ----------------------------------------------------------------------------- compile


@pytest.mark.slow
def test_train_compile_compiles_the_model_and_trains_the_same_model(tmp_path) -> None:
    # torch.compile on CPU: ~10 s of compiling for this tiny model.
    import torch._dynamo

    run = ("train.precision=fp32", "train.batch_size=48", "train.epochs=2")
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled = train(tmp_path, *run, "train.compile=true")
    frames = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    assert frames >= 1  # dynamo really traced the model
    plain = train(tmp_path, *run, "train.compile=false")
    for a, b in zip(weights(compiled), weights(plain), strict=True):
        # fp32; inductor may fuse the matmul and bias differently: a few ulp per step.
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    torch._dynamo.reset()
