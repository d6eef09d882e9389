"""``fit(config) -> FitResult``: set up, resume, train epoch by epoch, finish.

Each step is a short function over one ``Training`` (what the config built) and one
``Progress`` (what the run has done so far, as checkpoints store it).
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from contextlib import ExitStack
from functools import partial
from pathlib import Path

from torch import Tensor

from logreg_torch.checkpoint import load_checkpoint, resolve_checkpoints
from logreg_torch.config import Config, config_from_dict, config_to_yaml, save_config
from logreg_torch.fullbatch import Rows, solve_epoch
from logreg_torch.loop import evaluate, train_one_epoch, train_one_epoch_streaming
from logreg_torch.predict import predict_logits
from logreg_torch.report import log_final, start_final
from logreg_torch.rundir import RunFolderError, check_free, check_resume, folder_lock
from logreg_torch.runs import (
    TAGS,
    Checkpoints,
    FitResult,
    Progress,
    TrainingError,
    check_resume_fits,
    check_resume_name,
    diverged,
    divergence,
    new_run_dir,
    resume_line,
    run_ending,
    stage_parts,
)
from logreg_torch.runtime import (
    DistributedError,
    Runtime,
    init_distributed,
    resolve_runtime,
    seed_everything,
    set_rng_state,
    threads_for,
)
from logreg_torch.solvers import epoch_budget, load_optimizer_state, step_scheduler
from logreg_torch.tracking import TensorBoardLogger
from logreg_torch.training import Training, set_up


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
        with ExitStack() as held:  # the run folder's lock, held until the run ends
            return _fit(cfg, quiet, rank, world, held)
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


def _fit(cfg: Config, quiet: bool, rank: int, world: int, held: ExitStack) -> FitResult:
    started = time.perf_counter()
    runtime = resolve_runtime(cfg.train.device, cfg.train.precision, rank, world)
    seed_everything(cfg.train.seed, cfg.train.deterministic)
    # Everything that can refuse the run is checked before its folder is written.
    resume_state, notes = None, []
    if cfg.train.resume:
        cfg, resume_state, notes = _load_resume(cfg)
    if cfg.log.run_dir:
        check_free(cfg.log.run_dir, cfg.train.resume)
    t = set_up(cfg, runtime)
    # A small run computes on one thread until it ends (runtime.ONE_THREAD_ELEMENTS says why).
    held.enter_context(threads_for(runtime.device, t.n_global * len(t.data.feature_names)))
    progress = Progress() if resume_state is None else _resume(t, resume_state)
    if resume_state is None:
        progress.first_loss = _initial_loss(t)
    t.timings["setup"] = time.perf_counter() - started - t.timings["data"]
    for line in notes if runtime.is_main else ():  # the resume is taken: say from where
        print(line, file=sys.stderr)
    folder_started = time.perf_counter()
    run_dir = _run_dir(cfg, runtime, resume_state is not None, held)
    folder_seconds = time.perf_counter() - folder_started
    # A resume goes on in the same run (one folder, one run in TensorBoard), from the step
    # after its checkpoint's: an epoch, or for a full-batch solver (whose curves are per
    # iteration) an iteration.
    resumed_at = progress.step if t.solver else progress.epoch
    logger = TensorBoardLogger(run_dir, enabled=runtime.is_main,
                               purge_step=None if resume_state is None else resumed_at + 1)
    if resume_state is None:
        logger.log_custom_scalars_layout()
        logger.log_text("config", "```\n" + config_to_yaml(cfg) + "\n```")
    ckpt = _checkpoints(cfg, runtime, run_dir, progress, resumed=resume_state is not None)
    stopped_early = _train(t, progress, ckpt, logger, quiet)
    try:
        result = _finish(t, progress, logger, ckpt, stopped_early)
    except KeyboardInterrupt:
        ckpt.settle()
        logger.close()
        raise KeyboardInterrupt(  # a resume with no epoch left writes the summary again
            f"interrupted while writing the final summary (the checkpoints are complete); "
            f"{resume_line(run_dir)}") from None
    # Seconds by stage; "logging" is the rest: run folder, TensorBoard, checkpoints, figures.
    timings = t.timings
    timings["logging"] = time.perf_counter() - started - sum(timings.values())
    result.extra["timings"] = dict(timings)
    logging = {"run_folder": folder_seconds, **logger.seconds, "checkpoints": ckpt.seconds}
    result.extra["timings_detail"] = stage_parts(timings, t.evaluate_seconds, logging)
    return result


# ----------------------------------------------------------------------------- resume, run folder


def _load_resume(cfg: Config) -> tuple[Config, dict, list[str]]:
    """The checkpoint ``train.resume`` names (a file, a run folder's last.pt, the newest of a
    glob's), read and checked against the config: ``cfg`` with its path resolved, the state,
    and the lines that say which file was taken (and which folders skipped)."""
    notes: list[str] = []
    path = resolve_checkpoints([cfg.train.resume], prefer=("last.pt",), say=notes.append)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, resume=str(path)))
    state = load_checkpoint(path)
    check_resume_name(cfg, state)
    check_resume(path, state, dataclasses.asdict(cfg))
    return cfg, state, notes


def _resume(t: Training, state: dict) -> Progress:
    check_resume_fits(state, t.cfg, t.data.feature_names)
    t.model.load_state_dict(state["model"])
    if t.optimizer is not None:
        load_optimizer_state(t.optimizer, state["optimizer"])  # this device's kernels
    if t.scheduler is not None and state.get("scheduler") is not None:
        t.scheduler.load_state_dict(state["scheduler"])
    if t.scaler is not None and state.get("scaler") is not None:
        t.scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    progress = Progress.from_checkpoint(state)
    t.solve.used = progress.step if t.solver else 0  # a solver's steps are its iterations
    return progress


def _run_dir(cfg: Config, runtime: Runtime, resumed: bool, held: ExitStack) -> Path:
    """The run folder, locked by this run until it ends (a new one, or where a resume goes
    on); its config.yaml written."""
    run_dir, refused = None, None
    if runtime.is_main:
        try:
            run_dir = _claim_run_dir(cfg, resumed, held)
        except RunFolderError as e:
            if runtime.world_size == 1:
                raise
            refused = str(e)  # the other ranks stop with the same line
    if runtime.world_size > 1:  # rank 0 named the folder; the others need the name only
        import torch.distributed as dist

        holder = [run_dir, refused]
        dist.broadcast_object_list(holder, src=0)
        if holder[1] is not None:
            raise RunFolderError(holder[1])
        run_dir = Path(holder[0])
    if runtime.is_main:
        save_config(cfg, run_dir / "config.yaml")
    return run_dir


def _claim_run_dir(cfg: Config, resumed: bool, held: ExitStack) -> Path:
    if resumed:
        run_dir = Path(cfg.log.run_dir) if cfg.log.run_dir else Path(cfg.train.resume).parent
        run_dir.mkdir(parents=True, exist_ok=True)
    else:
        run_dir = new_run_dir(cfg)
    held.enter_context(folder_lock(run_dir))
    # Checked again under the lock: another process may have written it since the first look.
    check_free(run_dir, cfg.train.resume if resumed else None)
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
        from logreg_torch.progress import RunBars

        bar = t.bars = RunBars(
            epochs=t.cfg.train.epochs, start_epoch=progress.epoch,
            solver=t.cfg.optim.name if t.solver else None, max_iter=t.cfg.optim.max_iter,
            start_iter=progress.step if t.solver else 0, stream=t.stream,
            rank=t.runtime.rank, world=t.runtime.world_size)
    try:
        return _epochs(t, progress, ckpt, logger, bar)
    except KeyboardInterrupt:
        # Keep what was learned. The model may be mid-epoch now: last.pt gets the state of
        # the last finished epoch (already there, or the copy taken when it finished), so that
        # a resume replays whole epochs exactly.
        finished = int(progress.history[-1]["epoch"]) if progress.history else progress.epoch
        if ckpt.saved_epoch != finished and ckpt.pending is not None:
            ckpt.save("last.pt", finished, lambda: ckpt.pending)
        ckpt.settle()
        logger.close()
        if bar is not None:
            bar.close()
        raise KeyboardInterrupt(f"interrupted; {resume_line(ckpt.run_dir)}") from None
    except Exception:
        ckpt.settle()  # the checkpoints written before the failure, in place
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
        val = evaluate(t.model, t.objective, *t.val, t.runtime, t.evaluate_seconds)
        t.timings["evaluate"] += time.perf_counter() - started
        record.update({f"val/{k}": v for k, v in val.items()})
        monitored = val.get("loss", train_loss)
        step_scheduler(t.scheduler, monitored)
        improved = progress.update(monitored, cfg.train.early_stopping_min_delta)
        progress.history.append(record)
        _log_epoch(logger, t, record, done)
        if improved or t.best_is_last:
            ckpt.save("best.pt", done, partial(t.state, progress, done))
        if done % cfg.train.checkpoint_every == 0 or done == cfg.train.epochs:
            ckpt.save("last.pt", done, partial(t.state, progress, done))
        if bar is not None:
            bar.epoch_done(train_loss, val["loss"] if val else None)
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
                           n_global=t.n_global, step_graph=t.step_graph, **epoch_args)


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
        if t.bars is not None:
            t.bars.iteration(point)

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
    final = (start_final(logger, t.model, *t.val, t.runtime, t.data.label_map)
             if progress.history else None)  # the figures begin now: the model is final
    started = time.perf_counter()
    test = evaluate(t.model, t.objective, *t.test, t.runtime, t.evaluate_seconds) or None
    t.timings["evaluate"] += time.perf_counter() - started
    history = progress.history
    best = ((history[-1] if t.best_is_last else  # a solver's optimum, unless validation picks
             min(history, key=lambda r: r.get("val/loss", r["train/loss"]))) if history else {})
    t.ending = run_ending(t.cfg, progress, t.solve if t.solver else None, len(t.val[0]) > 0,
                          stopped_early, best)
    if history:  # the checkpoints say how the run ended, too
        done = int(history[-1]["epoch"])
        ckpt.save("last.pt", done, partial(t.state, progress, done))
        ckpt.add_ending("best.pt", partial(t.ending.stamp, solver=t.solver))
    logger.log_text("ending", t.ending.message)
    log_final(logger, t.cfg, t.model, t.objective, history, test, *t.val, t.runtime,
              t.data.label_map, t.ending, final)
    ckpt.flush()  # every checkpoint in place before the run reports
    logger.close()
    return FitResult(model=t.model, history=history, best=best, test=test,
                     run_dir=ckpt.run_dir, stopped_early=stopped_early, ending=t.ending)
