"""One epoch of training, in memory or streamed from disk, and ``evaluate`` on one split.

Both epochs build a loss closure and hand it to the one ``optimizer_step``; they differ only
in where the rows come from. Distributed full-batch training all-reduces loss and gradients
here, so L-BFGS sees exactly the single-process objective.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from logreg_torch.data import Stream, stream_batch
from logreg_torch.graphs import StepGraph
from logreg_torch.objective import Objective
from logreg_torch.predict import predict_logits
from logreg_torch.runtime import Runtime, autocast


def optimizer_step(model: nn.Module, optimizer: torch.optim.Optimizer,
                   closure: Callable[[], Tensor], grad_clip: float | None = None,
                   scaler: torch.amp.GradScaler | None = None) -> None:
    """One optimizer step on the loss ``closure`` computes (backward included): L-BFGS calls
    it as often as its line search needs; any other optimizer once, then clips and steps."""
    if isinstance(optimizer, torch.optim.LBFGS):
        optimizer.step(closure)
        return
    closure()
    if scaler is not None:
        scaler.unscale_(optimizer)
    if grad_clip is not None:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    objective: Objective,
    X: Tensor,
    y: Tensor,
    *,
    batch_size: int | None,
    epoch_seed: int,
    runtime: Runtime,
    grad_clip: float | None = None,
    scaler: torch.amp.GradScaler | None = None,
    on_step=None,
    n_global: int | None = None,
    step_graph: StepGraph | None = None,
) -> tuple[float, float]:
    """One pass over (X, y), already on the device. Returns (mean data loss over all ranks,
    gradient norm at the last step). ``step_graph`` (train.cuda_graphs) runs the minibatch
    steps as a replayed CUDA graph.

    Minibatches are slices of a seeded permutation of the rows: no per-sample DataLoader.
    Distributed minibatch training syncs gradients through DDP (``model`` is wrapped); a
    distributed full batch (``n_global`` rows over all ranks) all-reduces loss and gradients
    here, so L-BFGS sees exactly the single-process objective.
    """
    model.train()
    n = len(X)
    full_batch = isinstance(optimizer, torch.optim.LBFGS) or batch_size is None or batch_size >= n
    share = _rank_share(model, runtime, full_batch, n, n_global)
    graphed = None if full_batch else step_graph
    total = (graphed.total.zero_() if graphed is not None
             else torch.zeros((), device=X.device, dtype=torch.float64))
    for idx in _batches(n, None if full_batch else batch_size, epoch_seed, X.device):
        if graphed is not None:  # the same step, replayed; it adds to total itself
            graphed.step(idx)
            if on_step is not None:
                on_step()
            continue
        # index_select: a row gather, several times faster than X[idx] for a batch of rows
        xb, yb = (X, y) if idx is None else (X.index_select(0, idx), y.index_select(0, idx))
        closure = _batch_closure(model, optimizer, objective, xb, yb, runtime, scaler, share)
        optimizer_step(model, optimizer, closure, grad_clip, scaler)
        if isinstance(optimizer, torch.optim.LBFGS):
            with torch.no_grad(), autocast(runtime):  # loss at the final point
                closure.data = objective.data_loss(model(xb), yb)
        total += closure.data.double() * len(xb)
        if on_step is not None:
            on_step()
    # Gradients of the last step, as the optimizer saw them (after any clipping); reading them
    # once per epoch keeps a host sync out of every step.
    return _mean_over_ranks(total, n, runtime), _grad_norm(model)


def _rank_share(model: nn.Module, runtime: Runtime, full_batch: bool, n: int,
                n_global: int | None) -> float | None:
    """This rank's part of the global mean loss, for a distributed full batch (else None).

    Global mean loss = sum over ranks of (local mean * n_local / n_global); its gradient is
    the sum of the local gradients. The penalty is shared out so that it is counted once.
    (Under DDP, which already averages gradients in backward, a shard smaller than one batch
    must not be all-reduced a second time here.)"""
    if not runtime.distributed or not full_batch or isinstance(
            model, nn.parallel.DistributedDataParallel):
        return None
    return n / n_global if n_global else 1.0


def _mean_over_ranks(total: Tensor, n: int, runtime: Runtime) -> float:
    """The mean loss over every rank's rows, from this rank's summed loss ``total``."""
    if not runtime.distributed:
        return float(total) / n
    import torch.distributed as dist

    stats = torch.stack([total, total.new_tensor(float(n))])
    dist.all_reduce(stats)
    return float(stats[0] / stats[1])


def _batches(n: int, batch_size: int | None, epoch_seed: int,
             device: torch.device) -> list[Tensor | None]:
    """Row indices of each minibatch (a seeded permutation), or [None] for the full batch.

    The permutation is drawn by the CPU generator on every device, so that a run takes its
    batches in the same order on a CPU and on a GPU (and every rank the same order), and goes
    to the device in one copy an epoch; the batches are views of it, gathered there."""
    if batch_size is None:
        return [None]  # no indexing copy at all
    gen = torch.Generator().manual_seed(epoch_seed)
    perm = torch.randperm(n, generator=gen).to(device)
    return list(perm.split(batch_size))


def _batch_closure(model: nn.Module, optimizer: torch.optim.Optimizer, objective: Objective,
                   xb: Tensor, yb: Tensor, runtime: Runtime,
                   scaler: torch.amp.GradScaler | None, share: float | None):
    """The loss of one batch with its backward; ``closure.data`` keeps the data loss.
    ``share`` (distributed full batch) is this rank's part of the global mean."""

    def closure() -> Tensor:
        optimizer.zero_grad(set_to_none=True)
        with autocast(runtime):
            data = objective.model_loss(model, xb, yb)
        closure.data = data.detach()
        if share is None:
            loss = data + objective.penalty(model)
            (scaler.scale(loss) if scaler is not None else loss).backward()
            return loss
        loss = data * share + objective.penalty(model) / runtime.world_size
        loss.backward()
        return _all_reduce_loss_and_grads(loss, model)

    return closure


def full_batch_closure(model: nn.Module, optimizer: torch.optim.Optimizer, objective: Objective,
                       X: Tensor, y: Tensor, runtime: Runtime, n_global: int):
    """The loss closure of a full batch held in memory (this rank's rows of ``n_global``):
    what L-BFGS evaluates; distributed, it all-reduces loss and gradients."""
    share = len(X) / n_global if runtime.distributed else None
    return _batch_closure(model, optimizer, objective, X, y, runtime, None, share)


def _grad_norm(model: nn.Module) -> float:
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return 0.0
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g)
                                                       for g in grads])))


def _all_reduce_loss_and_grads(loss: Tensor, model: nn.Module) -> Tensor:
    import torch.distributed as dist

    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
    value = loss.detach().clone()
    dist.all_reduce(value)
    return value


def train_one_epoch_streaming(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    objective: Objective,
    stream: Stream,
    *,
    batch_size: int | None,
    epoch_seed: int,
    runtime: Runtime,
    grad_clip: float | None = None,
    scaler: torch.amp.GradScaler | None = None,
    on_step=None,
) -> tuple[float, float]:
    """``train_one_epoch`` for data that stays on disk: one chunk of rows in memory at a time.

    A full batch (L-BFGS) accumulates the gradient chunk by chunk, so it optimizes exactly the
    in-memory objective; under torchrun each rank reads every world_size-th chunk and the loss
    and gradients are all-reduced. Minibatches are drawn within chunks taken in a seeded order.
    """
    if not (isinstance(optimizer, torch.optim.LBFGS) or batch_size is None):
        total, n = 0.0, 0
        for i, (Xc, yc) in enumerate(my_chunks(stream, runtime, epoch_seed)):
            loss, grad_norm = train_one_epoch(
                model, optimizer, objective, Xc, yc, batch_size=batch_size,
                epoch_seed=epoch_seed * 7919 + i, runtime=runtime, grad_clip=grad_clip,
                scaler=scaler, on_step=on_step)
            total, n = total + loss * len(Xc), n + len(Xc)
        return total / max(n, 1), grad_norm

    model.train()
    closure = stream_closure(model, optimizer, objective, stream, runtime)
    # The loss reported is that of the closure's last evaluation; no GradScaler on this path.
    optimizer_step(model, optimizer, closure, grad_clip)
    if on_step is not None:
        on_step()
    return float(closure.data), _grad_norm(model)


def my_chunks(stream: Stream, runtime: Runtime,
               seed: int | None = None) -> Iterator[tuple[Tensor, Tensor]]:
    """This rank's chunks of training rows (every world_size-th), as tensors on the device."""
    for i, rows in enumerate(stream.chunks(seed)):
        if i % runtime.world_size == runtime.rank:
            yield stream_batch(stream, rows, runtime.dtype, runtime.device)


def stream_closure(model: nn.Module, optimizer: torch.optim.Optimizer, objective: Objective,
                    stream: Stream, runtime: Runtime):
    """The full-batch loss over every chunk, gradient accumulated chunk by chunk;
    ``closure.data`` keeps the data loss."""
    world = runtime.world_size

    def closure() -> Tensor:
        optimizer.zero_grad(set_to_none=True)
        data_total = torch.zeros((), device=runtime.device, dtype=torch.float64)
        for Xc, yc in my_chunks(stream, runtime):
            with autocast(runtime):
                data = objective.model_loss(model, Xc, yc) * (len(Xc) / stream.n_train)
            data.backward()
            data_total += data.detach().double()
        penalty = objective.penalty(model)
        if isinstance(penalty, Tensor):
            (penalty / world).backward()  # counted once over all ranks
            penalty = penalty.detach().double() / world
        loss = data_total + penalty
        if runtime.distributed:
            import torch.distributed as dist

            loss = _all_reduce_loss_and_grads(loss, model)
            dist.all_reduce(data_total)
        closure.data = data_total
        return loss

    return closure


# A split of up to this many rows is scored on the host when the model is on a GPU: one copy
# of its probabilities and targets costs less than the metrics' kernels there (a launch each,
# and a host sync in several: sorting, bucketing). gpu_check times both sides of it:
# configs/default.yaml (200 validation rows) and configs/lbfgs.yaml on 1e6 rows.
HOST_METRICS_ROWS = 1 << 16


@torch.no_grad()
def evaluate(model: nn.Module, objective: Objective, X: Tensor, y: Tensor,
             runtime: Runtime | None = None,
             seconds: dict[str, float] | None = None) -> dict[str, float]:
    """Loss (the training criterion, without penalty) and every metric on one split.
    ``seconds`` (--timings' finer entries) gets the time of the ``predict`` and ``metrics``
    parts added."""
    from logreg_torch.metrics import binary_metrics

    if len(X) == 0:
        return {}
    started = time.perf_counter()
    logits = predict_logits(model, X, runtime)
    loss = objective.data_loss(logits, y).reshape(1).to(logits.dtype)
    probs = torch.sigmoid(logits)
    if probs.is_cuda and len(probs) <= HOST_METRICS_ROWS:
        n = len(probs)
        loss, probs, y = torch.cat([loss, probs, y.to(probs.dtype)]).cpu().split([1, n, n])
    predicted = time.perf_counter()
    metrics = {"loss": float(loss), **binary_metrics(probs, y)}
    if seconds is not None:
        seconds["predict"] = seconds.get("predict", 0.0) + predicted - started
        seconds["metrics"] = seconds.get("metrics", 0.0) + time.perf_counter() - predicted
    return metrics
