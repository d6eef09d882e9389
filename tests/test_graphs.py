"""graphs.py: the minibatch step as a CUDA graph (train.cuda_graphs).

Without a GPU the capture is replaced by its eager equivalent (each replay runs the recorded
step, the gradients written afresh as a captured backward writes them): everything else,
the fixed index tensor, the warm-up steps, the eager last batch on the captured gradient
tensors, the running loss, must then give the plain loop's weights bit for bit. On a GPU the
real capture is held to the eager GPU run."""

from __future__ import annotations

import math

import pytest
import torch
from test_fit import (  # tests/ is on sys.path under pytest
    TINY,
    config,
    params,
    run,
)

import logreg_torch.graphs as graphs
from logreg_torch.config import ConfigError, load_config
from logreg_torch.data import prepare
from logreg_torch.graphs import WARMUP_STEPS, StepGraph
from logreg_torch.loop import train_one_epoch
from logreg_torch.model import build_model
from logreg_torch.objective import make_objective
from logreg_torch.runtime import resolve_runtime
from logreg_torch.solvers import make_optimizer

pytestmark = pytest.mark.usefixtures("no_figures")

EPOCHS = 4  # 160 rows in batches of 48: 3 full batches and one of 16 an epoch


def eager_capture(optimizer, captured: list) -> object:
    """A capture's eager stand-in. A graph replays into the memory it captured: so the
    gradient tensors must stay the ones the first replay wrote (an eager step that replaced
    them would leave the graph writing where nobody reads)."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    owned: list[int] = []

    def capture(step):
        captured.append(step)

        def replay():
            if owned:
                assert [p.grad.data_ptr() for p in params] == owned
            optimizer.zero_grad(set_to_none=False)  # a captured backward writes the gradients
            step()
            owned[:] = owned or [p.grad.data_ptr() for p in params]

        return replay

    return capture


def train(overrides: tuple[str, ...], graphed: bool) -> tuple[list, list[float], object]:
    """EPOCHS epochs of train_one_epoch on TINY's data, with or without a StepGraph."""
    cfg = load_config(None, [*TINY, *overrides])
    runtime = resolve_runtime("cpu", cfg.train.precision)
    data = prepare(cfg.data, cfg.train.seed)
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model.name, 5, cfg.model.hidden, cfg.model.dropout, cfg.model.bias)
    optimizer = make_optimizer(cfg, model)
    objective = make_objective(cfg, data.train[1], runtime.device, runtime.dtype)
    X, y = data.train
    captured: list = []
    step_graph = (StepGraph(model, optimizer, objective, X, y, cfg.train.batch_size, runtime,
                            cfg.train.grad_clip, capture=eager_capture(optimizer, captured))
                  if graphed else None)
    losses = []
    for epoch in range(EPOCHS):
        loss, _ = train_one_epoch(model, optimizer, objective, X, y,
                                  batch_size=cfg.train.batch_size, epoch_seed=epoch,
                                  runtime=runtime, grad_clip=cfg.train.grad_clip,
                                  step_graph=step_graph)
        losses.append(loss)
    return [p.detach().clone() for p in model.parameters()], losses, (step_graph, captured)


@pytest.mark.parametrize("overrides", [
    (),  # logistic: the fused linear + loss
    ("model.name=mlp", "model.hidden=[8]", "model.dropout=0.3", "train.grad_clip=0.05",
     "loss.l2=0.01", "optim.name=adamw"),
    ("train.precision=bf16",),  # autocast, without its weight cache in the step
], ids=["logistic", "mlp-dropout-clip-l2", "bf16"])
def test_the_graphed_step_trains_the_plain_loops_model_bit_for_bit(overrides) -> None:
    plain, plain_losses, _ = train(overrides, graphed=False)
    ours, losses, (step_graph, captured) = train(overrides, graphed=True)
    assert all(torch.equal(a, b) for a, b in zip(plain, ours, strict=True))
    assert losses == plain_losses
    # Captured once, after the warm-up; every last batch of an epoch ran eagerly.
    assert len(captured) == 1
    assert step_graph.eager_steps == WARMUP_STEPS + EPOCHS


def test_a_graph_that_reused_stale_gradients_would_show() -> None:
    # The control: a replay that does not write the gradients afresh (they add up across
    # steps) trains another model, which the comparison above sees.
    plain, _, _ = train((), graphed=False)
    cfg = load_config(None, list(TINY))
    runtime = resolve_runtime("cpu", "fp32")
    data = prepare(cfg.data, cfg.train.seed)
    torch.manual_seed(cfg.train.seed)
    model = build_model("logistic", 5, [], 0.0, True)
    optimizer = make_optimizer(cfg, model)
    objective = make_objective(cfg, data.train[1], runtime.device, runtime.dtype)
    stale = StepGraph(model, optimizer, objective, *data.train, 48, runtime, None,
                      capture=lambda step: step)
    for epoch in range(EPOCHS):
        train_one_epoch(model, optimizer, objective, *data.train, batch_size=48,
                        epoch_seed=epoch, runtime=runtime, step_graph=stale)
    assert not all(torch.equal(a, b.detach()) for a, b in zip(plain, model.parameters(),
                                                                strict=True))


@pytest.mark.parametrize(("overrides", "words"), [
    (("optim.name=sgd",), ["needs optim.name adam or adamw", "got 'sgd'"]),
    (("optim.scheduler=cosine",), ["optim.scheduler none", "keeps its learning rate"]),
    (("train.precision=fp16",), ["no GradScaler"]),
    (("train.batch_size=null",), ["train.batch_size minibatches"]),
    (("train.compile=true",), ["reduce-overhead"]),
])
def test_what_a_captured_step_cannot_do_is_refused_at_load(overrides, words) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, ["train.cuda_graphs=true", *overrides])
    for word in words:
        assert word in str(info.value)


def test_on_the_cpu_it_is_one_line_before_any_folder(tmp_path) -> None:
    with pytest.raises(ConfigError, match="needs one process on a CUDA device .train.device "
                                          "resolved to cpu"):
        run(tmp_path, "train.cuda_graphs=true")
    assert not (tmp_path / "run").exists()


@pytest.mark.cuda
@pytest.mark.parametrize("overrides", [(), ("train.precision=bf16", "model.name=mlp",
                                            "model.hidden=[8]", "model.dropout=0.3")],
                         ids=["fp32", "bf16-mlp-dropout"])
def test_on_a_gpu_the_captured_step_trains_the_eager_model(tmp_path, monkeypatch,
                                                           overrides) -> None:
    captures = []
    real = graphs.cuda_capture
    monkeypatch.setattr(graphs, "cuda_capture", lambda step: captures.append(1) or real(step))
    cuda = ("train.device=cuda", "train.epochs=4", *overrides)
    eager = run(tmp_path, *cuda, name="eager")
    graphed = run(tmp_path, *cuda, "train.cuda_graphs=true", name="graphed")
    assert captures == [1]
    for a, b in zip(params(eager), params(graphed), strict=True):
        # the same kernels, launched by a replay: held to 1e-6, not bit for bit
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-7)
    assert [r["train/loss"] for r in graphed.history] == pytest.approx(
        [r["train/loss"] for r in eager.history], rel=1e-6)
    assert all(math.isfinite(r["val/loss"]) for r in graphed.history)
    assert config(tmp_path, *cuda).train.cuda_graphs is False  # the default
