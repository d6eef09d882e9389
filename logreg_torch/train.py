"""The training loop: ``fit(config) -> FitResult``, from ``train_one_epoch`` and ``evaluate``."""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from logreg_torch.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from logreg_torch.config import (
    Config,
    ConfigError,
    config_from_dict,
    config_to_yaml,
    load_config,
    save_config,
)
from logreg_torch.data import Prepared, Stream, prepare, prepare_streaming, stream_batch
from logreg_torch.fast import linear_bce_with_logits, split_head
from logreg_torch.losses import (
    _check_range,
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
)
from logreg_torch.model import build_model, penalized_weights
from logreg_torch.runtime import (
    DistributedError,
    Runtime,
    init_distributed,
    resolve_runtime,
    rng_state,
    seed_everything,
    set_rng_state,
)
from logreg_torch.tracking import TensorBoardLogger

__all__ = ["FitResult", "TrainingError", "evaluate", "fit", "load_config", "train_one_epoch"]


# History keys -> TensorBoard tags. Time Series sorts groups and the cards in each by name:
# so it opens on train/loss (then train/lr), then val/..., and last the weights group: the
# gradient norm beside the weight histograms.
TAGS = {"lr": "train/lr", "grad_norm": "weights/grad_norm"}
# The HParams tab's metric columns (the first five ticked), the same for every run.
HPARAM_METRICS = ("val/loss", "val/accuracy", "val/roc_auc", "val/log_loss", "train/loss",
                  "val/precision", "val/recall", "val/f1", "val/average_precision",
                  "val/brier", "val/ece")
METRIC_DESCRIPTIONS = {
    "val/loss": "the training criterion on the validation split (pos_weight and label "
                "smoothing included, no l1/l2 penalty)",
    "val/log_loss": "plain log loss of the probabilities against the true 0/1 labels",
    "train/loss": "mean training criterion over the last epoch (no l1/l2 penalty)",
}


class TrainingError(RuntimeError):
    """Training cannot go on (a NaN/inf loss, say); one line for people."""


@dataclass
class FitResult:
    model: nn.Module
    history: list[dict[str, float]]  # one dict per epoch: epoch, train/loss, val/loss, val/..., lr
    best: dict[str, float]  # the history entry of the best epoch (lowest val loss)
    test: dict[str, float] | None  # metrics of the final model on the test split
    run_dir: Path
    stopped_early: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- pieces


@dataclass
class Objective:
    """The training criterion: our BCE (weighted, smoothed) plus l1/l2 on the weights."""

    from_logits: bool
    pos_weight: Tensor | None
    label_smoothing: float
    l2: float
    l1: float
    check_range: bool
    fused: bool = False  # fuse the model's last Linear with the loss (logreg_torch.fast)

    def model_loss(self, model: nn.Module, features: Tensor, targets: Tensor) -> Tensor:
        """Data loss of ``model(features)``; on the fast path the last layer and the loss run
        as one fused autograd Function, with the same values and gradients."""
        parts = split_head(model) if self.fused else None
        if parts is None:
            return self.data_loss(model(features), targets)
        body, head = parts
        if self.check_range and self.label_smoothing:
            _check_range(targets, "target", "training targets")
        if self.label_smoothing:
            targets = targets * (1 - self.label_smoothing) + self.label_smoothing / 2
        return linear_bce_with_logits(body(features), head, targets, self.pos_weight,
                                      self.check_range)

    def data_loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        if self.from_logits:
            return binary_cross_entropy_with_logits(
                logits, targets, pos_weight=self.pos_weight,
                label_smoothing=self.label_smoothing, check_range=self.check_range)
        # The probability version, for people who want it; weights pos_weight the same way.
        probs = torch.sigmoid(logits)
        weight = None
        if self.pos_weight is not None:
            weight = 1 + (self.pos_weight - 1) * targets
        return binary_cross_entropy(probs, targets, weight, label_smoothing=self.label_smoothing,
                                    check_range=self.check_range)

    def penalty(self, model: nn.Module) -> Tensor | float:
        if not (self.l2 or self.l1):
            return 0.0
        total: Tensor | float = 0.0
        for w in penalized_weights(model):
            if self.l2:
                total = total + 0.5 * self.l2 * w.pow(2).sum()
            if self.l1:
                total = total + self.l1 * w.abs().sum()
        return total


def make_objective(cfg: Config, train_targets: Tensor, device: torch.device,
                   dtype: torch.dtype) -> Objective:
    pos_weight = cfg.loss.pos_weight
    if pos_weight == "balanced":
        # negatives / positives on the training split, as scikit-learn's class_weight="balanced"
        # gives the same ratio between the classes.
        n_pos = float(train_targets.sum())
        pos_weight = (len(train_targets) - n_pos) / max(n_pos, 1.0)
    return Objective(
        from_logits=cfg.loss.from_logits,
        pos_weight=None if pos_weight is None else torch.tensor(float(pos_weight), device=device,
                                                                dtype=dtype),
        label_smoothing=cfg.loss.label_smoothing,
        l2=cfg.loss.l2,
        l1=cfg.loss.l1,
        check_range=cfg.loss.check_range,
        fused=fast_path_applies(cfg),
    )


def fast_path_applies(cfg: Config) -> bool:
    """The fused path needs logits, full precision (no autocast) and an uncompiled model."""
    return (cfg.train.fast_path and cfg.loss.from_logits and not cfg.train.compile
            and cfg.train.precision in ("fp32", "fp64"))


def make_optimizer(cfg: Config, model: nn.Module) -> torch.optim.Optimizer:
    o = cfg.optim
    params = list(model.parameters())
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    if o.name == "adam":
        return torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay)
    if o.name == "adamw":
        return torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)
    # Full-batch L-BFGS with a strong-Wolfe line search stops on tol, like scikit-learn's lbfgs.
    return torch.optim.LBFGS(params, lr=o.lr, max_iter=o.max_iter, history_size=o.history_size,
                             tolerance_grad=o.tol, tolerance_change=o.tol * 1e-3,
                             line_search_fn="strong_wolfe")


def make_scheduler(cfg: Config, optimizer: torch.optim.Optimizer):
    o = cfg.optim
    if o.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=o.step_size, gamma=o.gamma)
    if o.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.train.epochs)
    if o.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=o.gamma, patience=2)
    return None


def _autocast(runtime: Runtime):
    if runtime.autocast_dtype is None:
        return torch.autocast(runtime.device.type, enabled=False)
    return torch.autocast(runtime.device.type, dtype=runtime.autocast_dtype)


def _grad_norm(model: nn.Module) -> float:
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return 0.0
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g)
                                                       for g in grads])))


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
) -> tuple[float, float]:
    """One pass over (X, y), already on the device. Returns (mean data loss over all ranks,
    gradient norm at the last step).

    Minibatches are slices of a seeded permutation of the rows: no per-sample DataLoader.
    Distributed minibatch training syncs gradients through DDP (``model`` is wrapped); a
    distributed full batch (``n_global`` rows over all ranks) all-reduces loss and gradients
    here, so L-BFGS sees exactly the single-process objective.
    """
    model.train()
    n = len(X)
    full_batch = isinstance(optimizer, torch.optim.LBFGS) or batch_size is None or batch_size >= n
    if full_batch:
        batches = [None]  # no indexing copy at all
    else:
        gen = torch.Generator().manual_seed(epoch_seed)
        perm = torch.randperm(n, generator=gen).to(X.device)
        batches = list(perm.split(batch_size))
    # Global mean loss = sum over ranks of (local mean * n_local / n_global); its gradient is
    # the sum of the local gradients. The penalty is shared out so that it is counted once.
    # (Under DDP, which already averages gradients in backward, a shard smaller than one
    # batch must not be all-reduced a second time here.)
    sharded = runtime.distributed and full_batch and not isinstance(
        model, nn.parallel.DistributedDataParallel)
    share = n / n_global if sharded and n_global else 1.0
    total = torch.zeros((), device=X.device, dtype=torch.float64)
    for idx in batches:
        # index_select: a row gather, several times faster than X[idx] for a batch of rows
        xb, yb = (X, y) if idx is None else (X.index_select(0, idx), y.index_select(0, idx))

        def closure(xb=xb, yb=yb):
            optimizer.zero_grad(set_to_none=True)
            with _autocast(runtime):
                data = objective.model_loss(model, xb, yb)
            closure.data = data.detach()
            if not sharded:
                loss = data + objective.penalty(model)
                (scaler.scale(loss) if scaler is not None else loss).backward()
                return loss
            loss = data * share + objective.penalty(model) / runtime.world_size
            loss.backward()
            return _all_reduce_loss_and_grads(loss, model)

        if isinstance(optimizer, torch.optim.LBFGS):
            optimizer.step(closure)
            with torch.no_grad(), _autocast(runtime):  # loss at the final point
                closure.data = objective.data_loss(model(xb), yb)
        else:
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
        total += closure.data.double() * len(xb)
        if on_step is not None:
            on_step()
    # Gradients of the last step, as the optimizer saw them (after any clipping); reading them
    # once per epoch keeps a host sync out of every step.
    grad_norm = _grad_norm(model)
    if runtime.distributed:
        import torch.distributed as dist

        stats = torch.stack([total, total.new_tensor(float(n))])
        dist.all_reduce(stats)
        return float(stats[0] / stats[1]), grad_norm
    return float(total) / n, grad_norm


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

    def my_chunks(seed: int | None = None):
        for i, rows in enumerate(stream.chunks(seed)):
            if i % runtime.world_size == runtime.rank:
                yield stream_batch(stream, rows, runtime.dtype, runtime.device)

    if not (isinstance(optimizer, torch.optim.LBFGS) or batch_size is None):
        total, n = 0.0, 0
        for i, (Xc, yc) in enumerate(my_chunks(epoch_seed)):
            loss, grad_norm = train_one_epoch(
                model, optimizer, objective, Xc, yc, batch_size=batch_size,
                epoch_seed=epoch_seed * 7919 + i, runtime=runtime, grad_clip=grad_clip,
                scaler=scaler, on_step=on_step)
            total, n = total + loss * len(Xc), n + len(Xc)
        return total / max(n, 1), grad_norm

    model.train()
    world = runtime.world_size

    def closure():
        optimizer.zero_grad(set_to_none=True)
        data_total = torch.zeros((), device=runtime.device, dtype=torch.float64)
        for Xc, yc in my_chunks():
            with _autocast(runtime):
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

    if isinstance(optimizer, torch.optim.LBFGS):
        optimizer.step(closure)  # the loss reported is that of its last evaluation
    else:
        closure()
        if grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
    if on_step is not None:
        on_step()
    return float(closure.data), _grad_norm(model)


@torch.no_grad()
def predict_logits(model: nn.Module, X: Tensor, runtime: Runtime | None = None,
                   batch_size: int = 1 << 16) -> Tensor:
    """Logits for every row of X, in X's dtype even under mixed precision."""
    model.eval()
    out = []
    for xb in X.split(batch_size):
        with _autocast(runtime) if runtime is not None else torch.autocast("cpu", enabled=False):
            out.append(model(xb).to(X.dtype))
    return torch.cat(out) if out else X.new_zeros(0)


def predict_proba(model: nn.Module, X: Tensor, runtime: Runtime | None = None) -> Tensor:
    """Probabilities of class 1 for every row of X."""
    return torch.sigmoid(predict_logits(model, X, runtime))


@torch.no_grad()
def evaluate(model: nn.Module, objective: Objective, X: Tensor, y: Tensor,
             runtime: Runtime | None = None) -> dict[str, float]:
    """Loss (the training criterion, without penalty) and every metric on one split."""
    from logreg_torch.metrics import binary_metrics  # torchmetrics is slow to import

    if len(X) == 0:
        return {}
    logits = predict_logits(model, X, runtime)
    loss = float(objective.data_loss(logits, y))
    return {"loss": loss, **binary_metrics(torch.sigmoid(logits), y)}


# ----------------------------------------------------------------------------- run folder


def new_run_dir(cfg: Config) -> Path:
    """``runs/<name>-<timestamp>``, made with an exclusive mkdir so that two runs started in the
    same second get different folders (a ``-2``, ``-3`` suffix)."""
    if cfg.log.run_dir:
        path = Path(cfg.log.run_dir)
        path.mkdir(parents=True, exist_ok=True)
        return path
    base = Path("runs") / f"{cfg.log.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    base.parent.mkdir(parents=True, exist_ok=True)
    for i in range(1, 10_000):
        path = base if i == 1 else base.with_name(f"{base.name}-{i}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise TrainingError(f"could not create a run folder next to {base}")


# ----------------------------------------------------------------------------- fit


def _model_args(cfg: Config, in_features: int) -> dict[str, Any]:
    return {"name": cfg.model.name, "in_features": in_features, "hidden": list(cfg.model.hidden),
            "dropout": cfg.model.dropout, "bias": cfg.model.bias}


def model_from_checkpoint(state: dict) -> nn.Module:
    args = state["model_args"]
    model = build_model(args["name"], args["in_features"], args["hidden"], args["dropout"],
                        args["bias"])
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint weights do not fit a {args['name']} model with "
                              f"{args['in_features']} features: {str(e).splitlines()[0]}") from None
    return model.to(torch.float64 if state["config"]["train"]["precision"] == "fp64"
                    else torch.float32)


def fit(cfg: Config, quiet: bool = True) -> FitResult:
    """Train the model the config describes; log to TensorBoard; checkpoint; return the result.

    Under torchrun (WORLD_SIZE > 1) every rank runs this: it joins the process group, trains on
    its shard, and only rank 0 writes events and checkpoints.
    """
    # A Config built in code has not been through load_config's checks: run them before any
    # folder is made, so that a bad value fails here and not deep inside the loss.
    config_from_dict(dataclasses.asdict(cfg), source="the config given to fit")
    rank, world = init_distributed(cfg.train.device, cfg.train.dist_backend,
                                   cfg.train.dist_timeout)
    try:
        return _fit(cfg, quiet, rank, world)
    except RuntimeError as e:
        if world == 1 or isinstance(e, TrainingError | DistributedError) or not _is_dist_failure(e):
            raise
        raise DistributedError(
            f"rank {rank}: a collective failed: a peer process died or did not answer within "
            f"train.dist_timeout={cfg.train.dist_timeout:g}s ({str(e).strip().splitlines()[0]}"
            f"); the last checkpoint in the run folder stays loadable") from None
    finally:
        if world > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def _is_dist_failure(e: RuntimeError) -> bool:
    import torch.distributed as dist

    text = str(e).lower()
    return isinstance(e, dist.DistError) or any(
        word in text for word in ("gloo", "nccl", "connection", "timed out", "timeout", "peer"))


def _shard(pair: tuple[Tensor, Tensor], rank: int, world: int,
           equal: bool) -> tuple[Tensor, Tensor]:
    """Rows rank, rank + world, ... With ``equal`` (DDP minibatches, where every rank must take
    the same number of steps) the short shards wrap around to the start, as
    DistributedSampler pads; the full-batch path keeps the exact rows instead."""
    X, y = pair
    n = len(X)
    size = -(-n // world) if equal else len(range(rank, n, world))
    idx = (torch.arange(size) * world + rank) % max(n, 1)
    return X[idx], y[idx]


def _fit(cfg: Config, quiet: bool, rank: int, world: int) -> FitResult:
    runtime = resolve_runtime(cfg.train.device, cfg.train.precision, rank, world)
    seed_everything(cfg.train.seed, cfg.train.deterministic)
    full_batch = cfg.train.batch_size is None or cfg.optim.name == "lbfgs"

    resume_state = None
    if cfg.train.resume:
        resume_state = load_checkpoint(cfg.train.resume)
    stream = None
    if cfg.data.streaming:
        if world > 1 and not full_batch:
            raise ConfigError("data.streaming under torchrun needs a full batch (optim.name=lbfgs "
                              "or train.batch_size=null): DDP minibatches need equal steps on "
                              "every rank")
        stream, data = prepare_streaming(cfg.data, cfg.train.seed, dtype=runtime.dtype)
        n_global = stream.n_train
        train_targets = torch.tensor(stream.y[stream.train], dtype=runtime.dtype)
    else:
        data = prepare(cfg.data, cfg.train.seed, dtype=runtime.dtype)
        n_global = len(data.train[0])
        train_targets = data.train[1]
    train_rows = data.train if world == 1 else _shard(data.train, rank, world, not full_batch)
    X, y = (t.to(runtime.device) for t in train_rows)
    in_features = len(data.feature_names)
    if fast_path_applies(cfg) and full_batch:
        # Full batch on the fast path: store X column-major (each feature contiguous). Both
        # matrix-vector products then stream X at memory speed; row-major X makes torch.mv
        # several times slower than one read of X. (Minibatches gather rows: row-major.)
        X = X.t().contiguous().t()
    Xv, yv = (t.to(runtime.device) for t in data.val)
    Xt, yt = (t.to(runtime.device) for t in data.test)

    model = build_model(cfg.model.name, in_features, cfg.model.hidden, cfg.model.dropout,
                        cfg.model.bias).to(device=runtime.device, dtype=runtime.dtype)
    train_model = torch.compile(model) if cfg.train.compile else model  # same parameters
    if world > 1 and not full_batch:
        from torch.nn.parallel import DistributedDataParallel

        train_model = DistributedDataParallel(
            train_model, device_ids=[runtime.device.index] if runtime.device.type == "cuda"
            else None)
    # pos_weight "balanced" from the whole training split, the same on every rank
    objective = make_objective(cfg, train_targets, runtime.device, runtime.dtype)
    optimizer = make_optimizer(cfg, model)
    scheduler = make_scheduler(cfg, optimizer)
    scaler = (torch.amp.GradScaler(runtime.device.type)
              if cfg.train.precision == "fp16" else None)

    start_epoch, step, history = 0, 0, []
    best_loss, bad_epochs = math.inf, 0
    if resume_state is not None:
        _check_resume_fits(resume_state, cfg, data, in_features)
        model.load_state_dict(resume_state["model"])
        optimizer.load_state_dict(resume_state["optimizer"])
        if scheduler is not None and resume_state.get("scheduler") is not None:
            scheduler.load_state_dict(resume_state["scheduler"])
        if scaler is not None and resume_state.get("scaler") is not None:
            scaler.load_state_dict(resume_state["scaler"])
        set_rng_state(resume_state["rng"])
        start_epoch, step = resume_state["epoch"], resume_state["step"]
        history = list(resume_state.get("history", []))
        best_loss = resume_state.get("best_loss", math.inf)
        bad_epochs = resume_state.get("bad_epochs", 0)
        run_dir = Path(cfg.log.run_dir) if cfg.log.run_dir else Path(cfg.train.resume).parent
        if runtime.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
    else:
        run_dir = new_run_dir(cfg) if runtime.is_main else None
    if world > 1:  # rank 0 named the folder; the others need the name only
        import torch.distributed as dist

        holder = [run_dir]
        dist.broadcast_object_list(holder, src=0)
        run_dir = Path(holder[0])
    if runtime.is_main:
        save_config(cfg, run_dir / "config.yaml")

    logger = TensorBoardLogger(run_dir, enabled=runtime.is_main)
    if resume_state is None:
        logger.log_custom_scalars_layout()
        logger.log_text("config", "```\n" + config_to_yaml(cfg) + "\n```")

    def state(epoch: int) -> dict[str, Any]:
        return {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": None if scheduler is None else scheduler.state_dict(),
            "scaler": None if scaler is None else scaler.state_dict(),
            "epoch": epoch,
            "step": step,
            "rng": rng_state(),
            "config": dataclasses.asdict(cfg),
            "model_args": _model_args(cfg, in_features),
            "preprocessing": data.preprocessing,
            "label_map": data.label_map,
            "feature_names": data.feature_names,
            "history": history,
            "best_loss": best_loss,
            "bad_epochs": bad_epochs,
        }

    # The epoch run_dir/last.pt holds, when known: resuming from it, or once this run wrote it.
    resumed_in_place = resume_state is not None and (
        Path(cfg.train.resume).resolve() == (run_dir / "last.pt").resolve())
    saved_epoch = start_epoch if resumed_in_place else None

    def save(name: str, epoch: int) -> None:
        nonlocal saved_epoch
        if runtime.is_main:
            try:
                save_checkpoint(state(epoch), run_dir / name)
            except CheckpointError as e:  # a full disk, say: going on would lose more epochs
                good = last_good or "none was written yet"
                raise TrainingError(f"{e}; training stopped at epoch {epoch}; last good "
                                    f"checkpoint: {good}") from None
        if name == "last.pt":
            saved_epoch = epoch

    # Until this run writes last.pt, the checkpoint it resumed from is the last good one.
    last_good = Path(cfg.train.resume) if resume_state is not None else None
    stopped_early = False
    bar = None
    if not quiet and runtime.is_main:
        from tqdm import tqdm

        bar = tqdm(total=cfg.train.epochs, initial=start_epoch, desc="train", unit="epoch")
    epoch = start_epoch
    try:
        for epoch in range(start_epoch, cfg.train.epochs):
            def count_step() -> None:
                nonlocal step
                step += 1

            epoch_args = dict(batch_size=cfg.train.batch_size,
                              epoch_seed=cfg.train.seed * 1_000_003 + epoch, runtime=runtime,
                              grad_clip=cfg.train.grad_clip, scaler=scaler, on_step=count_step)
            if stream is not None:
                train_loss, grad_norm = train_one_epoch_streaming(
                    train_model, optimizer, objective, stream, **epoch_args)
            else:
                train_loss, grad_norm = train_one_epoch(
                    train_model, optimizer, objective, X, y, n_global=n_global, **epoch_args)
            if not math.isfinite(train_loss) or not _finite_params(model):
                where = f"{last_good}" if last_good else "none was written yet"
                raise TrainingError(
                    f"the loss became {train_loss} at epoch {epoch + 1} (step {step}); try a "
                    f"smaller optim.lr (now {cfg.optim.lr}) or train.grad_clip; last good "
                    f"checkpoint: {where}")
            record: dict[str, float] = {"epoch": epoch + 1, "step": step,
                                        "train/loss": train_loss,
                                        "lr": optimizer.param_groups[0]["lr"],
                                        "grad_norm": grad_norm}
            val = evaluate(model, objective, Xv, yv, runtime)
            record.update({f"val/{k}": v for k, v in val.items()})
            monitored = val.get("loss", train_loss)
            if scheduler is not None:
                if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    scheduler.step(monitored)
                else:
                    scheduler.step()
            improved = monitored < best_loss - cfg.train.early_stopping_min_delta
            if improved:
                best_loss, bad_epochs = monitored, 0
            else:
                bad_epochs += 1
            history.append(record)
            if (epoch + 1) % cfg.log.log_every == 0 or epoch + 1 == cfg.train.epochs:
                logger.log_dict({TAGS.get(k, k): v for k, v in record.items()
                                 if k not in ("epoch", "step")}, epoch + 1)
            hist_every = cfg.log.histogram_every
            if hist_every and (epoch + 1) % hist_every == 0:
                logger.log_histograms(model, epoch + 1)
            if improved:
                save("best.pt", epoch + 1)
            if (epoch + 1) % cfg.train.checkpoint_every == 0 or epoch + 1 == cfg.train.epochs:
                save("last.pt", epoch + 1)
                last_good = run_dir / "last.pt"
            if bar is not None:
                bar.update(1)
                bar.set_postfix(train_loss=f"{train_loss:.4f}",
                                val_loss=f"{val['loss']:.4f}" if val else "-")
            patience = cfg.train.early_stopping_patience
            lbfgs_done = isinstance(optimizer, torch.optim.LBFGS) and _lbfgs_converged(
                optimizer, cfg.optim.max_iter)
            if (patience is not None and bad_epochs >= patience) or lbfgs_done:
                stopped_early = epoch + 1 < cfg.train.epochs
                if (epoch + 1) % cfg.train.checkpoint_every != 0:
                    save("last.pt", epoch + 1)
                break
    except KeyboardInterrupt:
        # Keep what was learned. The model may be mid-epoch now: when last.pt already holds
        # the last finished epoch, keep it, so that a resume replays whole epochs exactly.
        finished = int(history[-1]["epoch"]) if history else start_epoch
        if saved_epoch != finished:
            save("last.pt", finished)
        logger.close()
        if bar is not None:
            bar.close()
        raise KeyboardInterrupt(
            f"interrupted; resume with: logreg-torch train {run_dir / 'config.yaml'} "
            f"train.resume={run_dir / 'last.pt'}") from None
    except Exception:
        logger.close()  # flush what was logged up to the failure
        raise
    finally:
        if bar is not None:
            bar.close()

    test = evaluate(model, objective, Xt, yt, runtime) or None
    _log_final(logger, cfg, model, objective, history, test, Xv, yv, runtime,
               data.label_map)
    logger.close()
    best = min(history, key=lambda r: r.get("val/loss", r["train/loss"])) if history else {}
    return FitResult(model=model, history=history, best=best, test=test, run_dir=run_dir,
                     stopped_early=stopped_early)


def _finite_params(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def _lbfgs_converged(optimizer: torch.optim.LBFGS, max_iter: int) -> bool:
    # L-BFGS stops early inside step() when it meets tolerance_grad/tolerance_change; running
    # fewer than max_iter iterations in the last step means it converged.
    state = optimizer.state[optimizer.param_groups[0]["params"][0]]
    return state.get("n_iter", 0) % max_iter != 0 or state.get("func_evals", 0) == 0


def _check_resume_fits(state: dict, cfg: Config, data: Prepared, in_features: int) -> None:
    args = state["model_args"]
    if args["in_features"] != in_features or args["name"] != cfg.model.name:
        raise CheckpointError(
            f"cannot resume from {cfg.train.resume}: it holds a {args['name']} model with "
            f"{args['in_features']} features, the config builds {cfg.model.name} with "
            f"{in_features}")


def _log_final(logger: TensorBoardLogger, cfg: Config, model: nn.Module, objective: Objective,
               history: list[dict[str, float]], test: dict[str, float] | None, Xv: Tensor,
               yv: Tensor, runtime: Runtime, label_map: dict[str, int]) -> None:
    if not history:
        return
    from logreg_torch.tracking import class_names, run_hparams

    final = history[-1]
    logger.log_hparams(run_hparams(dataclasses.asdict(cfg)), HPARAM_METRICS,
                       descriptions=METRIC_DESCRIPTIONS)
    if test:
        from logreg_torch.metrics import format_metrics_table

        logger.log_text("test_metrics", "```\n" + format_metrics_table(test) + "\n```")
    if len(Xv):
        names = class_names(label_map)
        step = int(final["epoch"])
        probs = predict_proba(model, Xv, runtime)
        logger.log_pr_curve("val/pr_curve", probs, yv, step, positive=names[1])
        from logreg_torch.tracking import (
            figures_available,
            pr_curve_figure,
            probability_histogram_figure,
            reliability_figure,
        )

        if figures_available():
            logger.log_figure("val/reliability", reliability_figure(probs, yv, names=names), step)
            logger.log_figure("val/probability_histogram",
                              probability_histogram_figure(probs, yv, names), step)
            logger.log_figure("val/precision_recall", pr_curve_figure(probs, yv, names), step)


def resolved_config_of(state: dict) -> Config:
    return config_from_dict(state["config"], source="checkpoint config")


__all__ += ["resolved_config_of", "model_from_checkpoint", "predict_logits", "predict_proba"]
