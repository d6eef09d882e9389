"""``fit(config) -> FitResult``: set up, resume, train epoch by epoch, finish.

Each step is a short function over one ``Training`` (what the config built) and one
``Progress`` (what the run has done so far, as checkpoints store it).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from logreg_torch.checkpoint import load_checkpoint, resolve_checkpoint
from logreg_torch.config import (
    FULL_BATCH_SOLVERS,
    Config,
    ConfigError,
    config_from_dict,
    config_to_yaml,
    save_config,
)
from logreg_torch.data import Prepared, Stream, prepare, prepare_streaming
from logreg_torch.fullbatch import Rows, SolveState, solve_epoch
from logreg_torch.loop import evaluate, train_one_epoch, train_one_epoch_streaming
from logreg_torch.model import build_model
from logreg_torch.objective import Objective, fast_path_applies, make_objective
from logreg_torch.predict import predict_logits
from logreg_torch.runs import (
    TAGS,
    Checkpoints,
    Ending,
    FitResult,
    Progress,
    TrainingError,
    check_resume_fits,
    check_resume_name,
    checkpoint_state,
    diverged,
    divergence,
    log_final,
    new_run_dir,
    resume_line,
    run_ending,
)
from logreg_torch.runtime import (
    DistributedError,
    Runtime,
    init_distributed,
    resolve_runtime,
    seed_everything,
    set_rng_state,
)
from logreg_torch.solvers import epoch_budget, make_optimizer, make_scheduler, step_scheduler
from logreg_torch.tracking import TensorBoardLogger


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


def _fit(cfg: Config, quiet: bool, rank: int, world: int) -> FitResult:
    started = time.perf_counter()
    runtime = resolve_runtime(cfg.train.device, cfg.train.precision, rank, world)
    seed_everything(cfg.train.seed, cfg.train.deterministic)
    resume_state = None
    if cfg.train.resume:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(
            cfg.train, resume=str(resolve_checkpoint(cfg.train.resume, prefer=("last.pt",)))))
        resume_state = load_checkpoint(cfg.train.resume)
        check_resume_name(cfg, resume_state)
    t = _set_up(cfg, runtime)
    t.timings["setup"] = time.perf_counter() - started - t.timings["data"]
    progress = Progress() if resume_state is None else _resume(t, resume_state)
    if resume_state is None:
        progress.first_loss = _initial_loss(t)
    run_dir = _run_dir(cfg, runtime, resumed=resume_state is not None)
    # A resume goes on in the same run (one folder, one run in TensorBoard), from the step
    # after its checkpoint's epoch.
    logger = TensorBoardLogger(run_dir, enabled=runtime.is_main,
                               purge_step=None if resume_state is None else progress.epoch + 1)
    if resume_state is None:
        logger.log_custom_scalars_layout()
        logger.log_text("config", "```\n" + config_to_yaml(cfg) + "\n```")
    ckpt = _checkpoints(cfg, runtime, run_dir, progress, resumed=resume_state is not None)
    stopped_early = _train(t, progress, ckpt, logger, quiet)
    try:
        result = _finish(t, progress, logger, ckpt, stopped_early)
    except KeyboardInterrupt:
        logger.close()
        raise KeyboardInterrupt(  # a resume with no epoch left writes the summary again
            f"interrupted while writing the final summary (the checkpoints are complete); "
            f"{resume_line(run_dir)}") from None
    # Seconds by stage; "logging" is the rest: run folder, TensorBoard, checkpoints, figures.
    timings = t.timings
    timings["logging"] = time.perf_counter() - started - sum(timings.values())
    result.extra["timings"] = dict(timings)
    return result


# ----------------------------------------------------------------------------- set up


@dataclass
class Training:
    """Everything one fit trains with, built once from the config."""

    cfg: Config
    runtime: Runtime
    data: Prepared
    stream: Stream | None  # data.streaming: the training rows stay on disk
    X: Tensor  # this rank's training rows on the device (empty when streaming)
    y: Tensor
    n_global: int  # training rows over all ranks
    val: tuple[Tensor, Tensor]
    test: tuple[Tensor, Tensor]
    model: nn.Module
    train_model: nn.Module  # the model, compiled and/or wrapped in DDP: the same parameters
    objective: Objective
    optimizer: torch.optim.Optimizer | None  # None for newton
    scheduler: Any
    scaler: torch.amp.GradScaler | None
    # seconds spent so far: data, setup (the rest of _set_up), train (epochs), evaluate
    timings: dict[str, float] = field(
        default_factory=lambda: dict.fromkeys(("data", "setup", "train", "evaluate"), 0.0))
    solve: SolveState = field(default_factory=SolveState)  # full-batch solvers
    ending: Ending | None = None  # once the run has ended

    @property
    def solver(self) -> bool:
        """A full-batch solver (lbfgs, newton): iterations, not epochs, are what it counts."""
        return self.cfg.optim.name in FULL_BATCH_SOLVERS

    def state(self, progress: Progress, epoch: int) -> dict[str, Any]:
        return checkpoint_state(self.cfg, self.data, self.model, self.optimizer, self.scheduler,
                                self.scaler, progress, epoch,
                                None if self.ending is None else self.ending.as_dict())


def _set_up(cfg: Config, runtime: Runtime) -> Training:
    full_batch = cfg.train.batch_size is None or cfg.optim.name in FULL_BATCH_SOLVERS
    # Full batch on the fast path: store X column-major (each feature contiguous). Both
    # matrix-vector products then stream X at memory speed; row-major X makes torch.mv
    # several times slower than one read of X. (Minibatches gather rows: row-major.)
    column_major = fast_path_applies(cfg) and full_batch
    world = runtime.world_size
    # One process on the CPU: the data is read straight into that layout, with no second copy.
    direct = column_major and world == 1 and runtime.device.type == "cpu"
    started = time.perf_counter()
    stream, data, n_global, train_targets = _load_data(cfg, runtime, full_batch, direct)
    data_seconds = time.perf_counter() - started
    train_rows = data.train if world == 1 else _shard(data.train, runtime.rank, world,
                                                      not full_batch)
    X, y = (t.to(runtime.device) for t in train_rows)
    if column_major and not (X.dim() == 2 and X.stride(0) == 1):
        X = X.t().contiguous().t()
    val = tuple(t.to(runtime.device) for t in data.val)
    test = tuple(t.to(runtime.device) for t in data.test)
    model = build_model(cfg.model.name, len(data.feature_names), cfg.model.hidden,
                        cfg.model.dropout, cfg.model.bias).to(device=runtime.device,
                                                              dtype=runtime.dtype)
    train_model = _train_model(model, cfg, runtime, full_batch)
    # pos_weight "balanced" from the whole training split, the same on every rank
    objective = make_objective(cfg, train_targets, runtime.device, runtime.dtype)
    optimizer = make_optimizer(cfg, model)
    scheduler = make_scheduler(cfg, optimizer)
    scaler = (torch.amp.GradScaler(runtime.device.type)
              if cfg.train.precision == "fp16" else None)
    t = Training(cfg, runtime, data, stream, X, y, n_global, val, test, model, train_model,
                 objective, optimizer, scheduler, scaler)
    t.timings["data"] = data_seconds
    return t


def _load_data(cfg: Config, runtime: Runtime, full_batch: bool,
               column_major: bool) -> tuple[Stream | None, Prepared, int, Tensor]:
    """(stream or None, prepared splits, training rows over all ranks, training targets)."""
    if not cfg.data.streaming:
        data = prepare(cfg.data, cfg.train.seed, dtype=runtime.dtype, column_major=column_major)
        return None, data, len(data.train[0]), data.train[1]
    if runtime.world_size > 1 and not full_batch:
        raise ConfigError("data.streaming under torchrun needs a full batch (optim.name=lbfgs "
                          "or train.batch_size=null): DDP minibatches need equal steps on "
                          "every rank")
    stream, data = prepare_streaming(cfg.data, cfg.train.seed, dtype=runtime.dtype)
    return stream, data, stream.n_train, torch.tensor(stream.y[stream.train], dtype=runtime.dtype)


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


def _train_model(model: nn.Module, cfg: Config, runtime: Runtime, full_batch: bool) -> nn.Module:
    train_model = torch.compile(model) if cfg.train.compile else model  # same parameters
    if runtime.world_size > 1 and not full_batch:
        from torch.nn.parallel import DistributedDataParallel

        train_model = DistributedDataParallel(
            train_model, device_ids=[runtime.device.index] if runtime.device.type == "cuda"
            else None)
    return train_model


# ----------------------------------------------------------------------------- resume, run folder


def _resume(t: Training, state: dict) -> Progress:
    check_resume_fits(state, t.cfg, len(t.data.feature_names))
    t.model.load_state_dict(state["model"])
    if t.optimizer is not None:
        t.optimizer.load_state_dict(state["optimizer"])
    if t.scheduler is not None and state.get("scheduler") is not None:
        t.scheduler.load_state_dict(state["scheduler"])
    if t.scaler is not None and state.get("scaler") is not None:
        t.scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    progress = Progress.from_checkpoint(state)
    t.solve.used = progress.step if t.solver else 0  # a solver's steps are its iterations
    return progress


def _run_dir(cfg: Config, runtime: Runtime, resumed: bool) -> Path:
    """The run folder: a new one, or where a resume goes on; its config.yaml written."""
    if resumed:
        run_dir = Path(cfg.log.run_dir) if cfg.log.run_dir else Path(cfg.train.resume).parent
        if runtime.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
    else:
        run_dir = new_run_dir(cfg) if runtime.is_main else None
    if runtime.world_size > 1:  # rank 0 named the folder; the others need the name only
        import torch.distributed as dist

        holder = [run_dir]
        dist.broadcast_object_list(holder, src=0)
        run_dir = Path(holder[0])
    if runtime.is_main:
        save_config(cfg, run_dir / "config.yaml")
    return run_dir


def _checkpoints(cfg: Config, runtime: Runtime, run_dir: Path, progress: Progress,
                 resumed: bool) -> Checkpoints:
    if not resumed:
        return Checkpoints(run_dir, runtime.is_main, last_good=None, saved_epoch=None)
    # Until this run writes last.pt, the checkpoint it resumed from is the last good one; and
    # when that is run_dir/last.pt itself, it holds the resumed epoch.
    in_place = Path(cfg.train.resume).resolve() == (run_dir / "last.pt").resolve()
    return Checkpoints(run_dir, runtime.is_main, last_good=Path(cfg.train.resume),
                       saved_epoch=progress.epoch if in_place else None)


# ----------------------------------------------------------------------------- epochs


def _train(t: Training, progress: Progress, ckpt: Checkpoints, logger: TensorBoardLogger,
           quiet: bool) -> bool:
    """Every epoch left; returns whether a stopping rule ended the run before the last one.
    Ctrl-C keeps the last finished epoch in last.pt and says how to resume."""
    bar = None
    if not quiet and t.runtime.is_main:
        from tqdm import tqdm

        bar = tqdm(total=t.cfg.train.epochs, initial=progress.epoch, desc="train", unit="epoch")
    try:
        return _epochs(t, progress, ckpt, logger, bar)
    except KeyboardInterrupt:
        # Keep what was learned. The model may be mid-epoch now: last.pt gets the state of
        # the last finished epoch (already there, or the copy taken when it finished), so that
        # a resume replays whole epochs exactly.
        finished = int(progress.history[-1]["epoch"]) if progress.history else progress.epoch
        if ckpt.saved_epoch != finished and ckpt.pending is not None:
            ckpt.save("last.pt", finished, lambda: ckpt.pending)
        logger.close()
        if bar is not None:
            bar.close()
        raise KeyboardInterrupt(f"interrupted; {resume_line(ckpt.run_dir)}") from None
    except Exception:
        logger.close()  # flush what was logged up to the failure
        raise
    finally:
        if bar is not None:
            bar.close()


def _epochs(t: Training, progress: Progress, ckpt: Checkpoints, logger: TensorBoardLogger,
            bar) -> bool:
    cfg = t.cfg
    ckpt.keep_unsaved(progress.epoch, partial(t.state, progress, progress.epoch))
    for epoch in range(progress.epoch, cfg.train.epochs):
        done = epoch + 1
        started = time.perf_counter()
        try:
            train_loss, grad_norm = _train_epoch(t, progress, epoch, logger)
        except RuntimeError as e:  # torch.optim's step size itself overflows (Adam, lr=1e38)
            if "without overflow" not in str(e):
                raise
            raise diverged("the optimizer's step overflowed", done, progress.step,
                           ckpt.last_good, cfg.optim.lr) from None
        t.timings["train"] += time.perf_counter() - started
        why = divergence(train_loss, t.model, progress.first_loss)
        if why is not None:
            raise diverged(why, done, progress.step, ckpt.last_good, cfg.optim.lr)
        record: dict[str, float] = {"epoch": done, "step": progress.step,
                                    "train/loss": train_loss}
        if t.optimizer is not None:
            record["lr"] = t.optimizer.param_groups[0]["lr"]
        record["grad_norm"] = grad_norm  # a full-batch solver's: max|grad| (see README)
        started = time.perf_counter()
        val = evaluate(t.model, t.objective, *t.val, t.runtime)
        t.timings["evaluate"] += time.perf_counter() - started
        record.update({f"val/{k}": v for k, v in val.items()})
        monitored = val.get("loss", train_loss)
        step_scheduler(t.scheduler, monitored)
        improved = progress.update(monitored, cfg.train.early_stopping_min_delta)
        progress.history.append(record)
        _log_epoch(logger, t, record, done)
        if improved:
            ckpt.save("best.pt", done, partial(t.state, progress, done))
        if done % cfg.train.checkpoint_every == 0 or done == cfg.train.epochs:
            ckpt.save("last.pt", done, partial(t.state, progress, done))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(train_loss=f"{train_loss:.4f}",
                            val_loss=f"{val['loss']:.4f}" if val else "-")
        ckpt.keep_unsaved(done, partial(t.state, progress, done))
        if _should_stop(t, progress):
            if done % cfg.train.checkpoint_every != 0:
                ckpt.save("last.pt", done, partial(t.state, progress, done))
            return done < cfg.train.epochs
    return False


def _train_epoch(t: Training, progress: Progress, epoch: int,
                 logger: TensorBoardLogger) -> tuple[float, float]:
    cfg = t.cfg
    if t.solver:
        return _solve_epoch(t, progress, epoch, logger)
    epoch_args = dict(batch_size=cfg.train.batch_size,
                      epoch_seed=cfg.train.seed * 1_000_003 + epoch, runtime=t.runtime,
                      grad_clip=cfg.train.grad_clip, scaler=t.scaler, on_step=progress.count_step)
    if t.stream is not None:
        return train_one_epoch_streaming(t.train_model, t.optimizer, t.objective, t.stream,
                                         **epoch_args)
    return train_one_epoch(t.train_model, t.optimizer, t.objective, t.X, t.y,
                           n_global=t.n_global, **epoch_args)


def _initial_loss(t: Training) -> float | None:
    """The criterion of the untrained model: the yardstick of the divergence rule."""
    X, y = t.val if len(t.val[0]) else (t.X, t.y)
    if len(X) == 0 or (X is t.X and t.runtime.world_size > 1):  # shards differ across ranks
        return None
    loss = float(t.objective.data_loss(predict_logits(t.model, X, t.runtime), y))
    return loss if math.isfinite(loss) and loss > 0 else None


def _solve_epoch(t: Training, progress: Progress, epoch: int,
                 logger: TensorBoardLogger) -> tuple[float, float]:
    """One epoch of lbfgs / newton: its share of optim.max_iter, every iteration logged as
    ``train/loss`` (the objective, penalty included) and ``grad_norm`` (max|grad|)."""
    o = t.cfg.optim
    budget = epoch_budget(o.max_iter, t.cfg.train.epochs, epoch, t.solve.used)
    rows = Rows(t.X, t.y, t.stream, t.n_global)

    def on_iter(point) -> None:
        logger.log_dict({"train/loss": point.loss, TAGS["grad_norm"]: point.grad_max},
                        point.iteration)

    report = solve_epoch(t.model, t.optimizer, t.objective, rows, t.runtime, o, t.solve, budget,
                         on_iter)
    progress.step = t.solve.used
    penalty = t.objective.penalty(t.model)
    penalty = float(penalty.detach()) if isinstance(penalty, Tensor) else float(penalty)
    return report.loss - penalty, report.grad_max


def _log_epoch(logger: TensorBoardLogger, t: Training, record: dict[str, float],
               done: int) -> None:
    cfg = t.cfg
    # A full-batch solver's curves are per iteration (logged as it runs); its epochs add the
    # validation points at the iteration they were reached.
    skip = ("epoch", "step", "train/loss", "grad_norm") if t.solver else ("epoch", "step")
    step = int(record["step"]) if t.solver else done
    if done % cfg.log.log_every == 0 or done == cfg.train.epochs:
        logger.log_dict({TAGS.get(k, k): v for k, v in record.items() if k not in skip}, step)
    hist_every = cfg.log.histogram_every
    if hist_every and done % hist_every == 0:
        logger.log_histograms(t.model, step)


def _should_stop(t: Training, progress: Progress) -> bool:
    """Early stopping ran out of patience, or a full-batch solver is done (converged, out of
    budget, or stalled)."""
    patience = t.cfg.train.early_stopping_patience
    return ((patience is not None and progress.bad_epochs >= patience)
            or (t.solver and t.solve.done(t.cfg.optim.max_iter)))


# ----------------------------------------------------------------------------- finish


def _finish(t: Training, progress: Progress, logger: TensorBoardLogger, ckpt: Checkpoints,
            stopped_early: bool) -> FitResult:
    started = time.perf_counter()
    test = evaluate(t.model, t.objective, *t.test, t.runtime) or None
    t.timings["evaluate"] += time.perf_counter() - started
    history = progress.history
    best = min(history, key=lambda r: r.get("val/loss", r["train/loss"])) if history else {}
    t.ending = run_ending(t.cfg, progress, t.solve if t.solver else None, len(t.val[0]) > 0,
                          stopped_early, best)
    if history:  # the checkpoints say how the run ended, too
        done = int(history[-1]["epoch"])
        ckpt.save("last.pt", done, partial(t.state, progress, done))
        ckpt.add_ending("best.pt", t.ending.as_dict())
    logger.log_text("ending", t.ending.message)
    log_final(logger, t.cfg, t.model, t.objective, history, test, *t.val, t.runtime,
              t.data.label_map, t.ending)
    logger.close()
    return FitResult(model=t.model, history=history, best=best, test=test,
                     run_dir=ckpt.run_dir, stopped_early=stopped_early, ending=t.ending)
