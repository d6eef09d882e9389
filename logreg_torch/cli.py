"""``logreg-torch``: train | evaluate | predict | summary | config | explain.

A user mistake (a bad config, data file, checkpoint or argument) ends with one line on stderr
and exit code 2; a bug still shows its traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from logreg_torch.commands import (
    UsageError,
    cmd_evaluate,
    cmd_predict,
    cmd_summary,
    loss_note_of,
)


def _user_errors() -> tuple[type[Exception], ...]:
    from logreg_torch.checkpoint import CheckpointError
    from logreg_torch.config import ConfigError
    from logreg_torch.data import DataError
    from logreg_torch.inference import InferenceError
    from logreg_torch.rundir import RunFolderError
    from logreg_torch.runs import TrainingError
    from logreg_torch.runtime import DistributedError

    return (ConfigError, DataError, CheckpointError, TrainingError, DistributedError, UsageError,
            InferenceError, RunFolderError)


CHECKPOINT_HELP = ("a checkpoint (last.pt, best.pt) or a run folder (its best.pt, else "
                   "last.pt); given several, e.g. runs/default-*, the newest is used")


def _version() -> str:
    from logreg_torch import __version__

    return __version__


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="logreg-torch",
        description="Logistic regression in PyTorch with a hand-written binary cross-entropy.",
    )
    parser.add_argument("--version", action="version", version=f"logreg-torch {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a model from a YAML config")
    p.add_argument("config", help="YAML config file, e.g. configs/default.yaml")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. optim.lr=0.1")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar or metric tables; still the run folder and how the "
                        "run ended")
    p.add_argument("--timings", action="store_true",
                   help="print seconds by stage (imports, data, setup, train, evaluate, "
                        "logging) as one JSON line on stderr")

    p = sub.add_parser("evaluate", help="print every metric of a checkpoint on a data split")
    p.add_argument("checkpoint", nargs="+", help=CHECKPOINT_HELP)
    p.add_argument("--data", help="labeled rows: a CSV, an npy folder, X.npy, an .npz, shards, "
                                  "or a bundled name (default: the run's test split, else val)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p = sub.add_parser("predict", help="write the probability and label of each row")
    p.add_argument("checkpoint", nargs="+", help=CHECKPOINT_HELP)
    p.add_argument("input", help="rows to score: a CSV with the model's feature columns, an "
                                 "npy folder, X.npy, an .npz, shards, or a bundled name")
    p.add_argument("--output", "-o", required=True,
                   help="where to write the predictions: a .csv (the input's columns, then "
                        "probability and prediction), or a .npy (the probabilities only)")
    p.add_argument("--threshold", type=float, default=0.5, help="probability for class 1")

    p = sub.add_parser("config", help="print the resolved config")
    p.add_argument("config")
    p.add_argument("overrides", nargs="*")

    p = sub.add_parser("summary", help="coefficients with standard errors, z, p-values and "
                                       "intervals of a logistic model (as statsmodels' Logit)")
    p.add_argument("run", nargs="+", help=CHECKPOINT_HELP)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--alpha", type=float, default=0.05,
                   help="1 - confidence level of the intervals (default 0.05: 95%%)")

    p = sub.add_parser("explain", help="walk through log loss on the jacket/cardigan example")
    p.add_argument("--probs", help="comma-separated predicted probabilities of class 1")
    p.add_argument("--labels", help="comma-separated true classes (0 or 1)")
    return parser


def cmd_train(args: argparse.Namespace) -> int:
    from logreg_torch.config import load_config
    from logreg_torch.fit import fit

    cfg = load_config(args.config, args.overrides)
    result = fit(cfg, quiet=args.quiet)
    if args.timings and os.environ.get("RANK", "0") == "0":
        _print_timings(getattr(args, "import_seconds", {}), result.extra)
    if os.environ.get("RANK", "0") == "0":  # torchrun: rank 0 reports
        _report(result, cfg, args.quiet)
    return 0


def _print_timings(imports: dict[str, float], extra: dict) -> None:
    """One JSON line on stderr: seconds by stage ("timings"), and within the imports, evaluate
    and logging stages by part ("parts"; each adds up to its stage)."""
    timings = {"imports": sum(imports.values()), **extra.get("timings", {})}
    parts = {"imports": imports, **extra.get("timings_detail", {})}
    print(json.dumps({"timings": {k: round(v, 4) for k, v in timings.items()},
                      "parts": {stage: {k: round(v, 4) for k, v in named.items()}
                                for stage, named in parts.items()}}), file=sys.stderr)


def _report(result, cfg, quiet: bool) -> None:
    """The metric tables (not with --quiet), then where the run is and how it ended."""
    if not quiet:
        from logreg_torch.metrics import format_metrics_table

        last = result.history[-1] if result.history else {}
        print(f"trained {len(result.history)} epoch(s); final train loss "
              f"{last.get('train/loss', float('nan')):.4f}")
        val = {k[4:]: v for k, v in last.items() if k.startswith("val/")}
        if val:
            print("validation metrics:\n" + format_metrics_table(val, note=loss_note_of(cfg)))
        if result.test:
            print("test metrics:\n" + format_metrics_table(result.test, note=loss_note_of(cfg)))
    print(f"run folder: {result.run_dir} (checkpoints last.pt, best.pt)")
    print(f"see the curves with: tensorboard --logdir {tensorboard_logdir(result.run_dir)}")
    if result.ending is not None:  # the last line says how the run ended
        print(result.ending.message)


def tensorboard_logdir(run_dir: Path) -> Path:
    """The folder to give ``tensorboard --logdir`` for a run: the folder of its runs (so it
    is drawn beside its siblings), or the run folder itself when that has no parent folder
    here (``--logdir .`` would read the whole working directory)."""
    parent = Path(run_dir).parent
    return Path(run_dir) if parent == Path(".") else parent


def cmd_config(args: argparse.Namespace) -> int:
    from logreg_torch.config import config_to_yaml, load_config

    print(config_to_yaml(load_config(args.config, args.overrides)), end="")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from logreg_torch.explain import explain, parse_numbers

    try:
        probs = parse_numbers(args.probs, name="--probs") if args.probs is not None else None
        labels = parse_numbers(args.labels, name="--labels") if args.labels is not None else None
        print(explain(probs, labels))
    except ValueError as e:
        raise UsageError(str(e)) from None
    return 0


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict,
            "summary": cmd_summary, "config": cmd_config, "explain": cmd_explain}


def _quiet_openmp_threads() -> None:
    """OpenMP threads that sleep, not spin, when idle; set before torch is imported (OpenMP
    reads it once, at load) and only if the user has not chosen.

    On a machine shared with other processes, spinning threads take the cores that the
    working ones need: one full-batch epoch (N=2e5, D=100) took 119 ms with the default policy
    and 10 ms with PASSIVE on this project's busy 2-core machine (torch's own ops: 195 ms and
    11 ms), and beside one more CPU-bound process the fused path slowed 1.05x under PASSIVE
    against 1.8x for torch's own ops (scripts/bench_threads.py).
    """
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main(argv: Sequence[str] | None = None, *, exiting: bool = False) -> int:
    """Run one command; returns its exit code (0, 2 for a user mistake, 130 for Ctrl-C).

    ``exiting=True`` (the console script) leaves Ctrl-C ignored after the command, so that
    the interpreter's shutdown (joining threads, flushing files) is not cut either.
    """
    _quiet_openmp_threads()
    from logreg_torch.interrupts import handle_sigint, stopping

    with handle_sigint(restore=not exiting):
        try:
            return _run(argv)
        except KeyboardInterrupt as e:  # also one that lands while an error is reported
            return _interrupted(e)
        finally:
            if exiting:  # console_main's handler, which this one is inside, ends later
                stopping()


def _interrupted(e: KeyboardInterrupt) -> int:
    """Ctrl-C: the resume command when a run folder exists, else just 'interrupted'."""
    print(f"\n{e}" if str(e) else "\ninterrupted", file=sys.stderr)
    return 130


def _run(argv: Sequence[str] | None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--version"]:  # an exit code like every command's, not argparse's exit
        print(f"logreg-torch {_version()}")
        return 0
    parser = _parser()
    # Overrides may come before or after flags (train CONFIG --quiet a=1 b=2); argparse
    # stops a positional list at the first flag, so gather the rest here.
    args, extra = parser.parse_known_args(argv)
    if extra:
        flags = [e for e in extra if e.startswith("-")]
        if hasattr(args, "overrides") and all("=" in e for e in flags):
            if flags:  # --optim.lr=0.1, as other tools spell their overrides
                print(f"error: override {flags[0]!r} starts with '-'; write overrides as "
                      f"key=value without dashes, e.g. {flags[0].lstrip('-')}", file=sys.stderr)
                return 2
            args.overrides += extra  # load_config names any that is not key=value
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.import_seconds = _preload(args.command)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        raise  # before the clause below: it imports modules, and Ctrl-C may have cut one
    except _user_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


# What each command imports anyway. Imported up front with Ctrl-C held until they are in: an
# import cut in the middle (torch registers C++ operators as it loads) leaves a process that
# fails on the next import, even the one that reports the interrupt.
PRELOAD = {
    "train": ("torch", "logreg_torch.fit", "torch.utils.tensorboard"),
    "evaluate": ("logreg_torch.fit",),
    "predict": ("logreg_torch.predict", "logreg_torch.data"),
    "config": ("logreg_torch.config",),
    "explain": ("logreg_torch.explain",),
}


def _preload(command: str) -> dict[str, float]:
    """Import what ``command`` needs; the seconds of each (--timings' "imports" parts)."""
    import importlib

    from logreg_torch.interrupts import critical

    seconds = {}
    with critical():
        for name in PRELOAD.get(command, ()):
            started = time.perf_counter()
            importlib.import_module(name)
            seconds[name] = time.perf_counter() - started
    return seconds


def _start_figures(args: list[str]) -> None:
    """``train``'s figures' process, started before torch loads: it imports matplotlib
    meanwhile (logreg_torch.figure_worker)."""
    if (args[:1] == ["train"] and os.environ.get("RANK", "0") == "0"
            and not {"-h", "--help"} & set(args)):
        from logreg_torch import figure_worker

        figure_worker.start()


def console_main(argv: Sequence[str] | None = None, stderr: str | None = None) -> NoReturn:
    """The ``logreg-torch`` script: ``main`` as a whole process, exiting with its code.
    ``stderr``: a file to write the messages to instead (a process started by a test).

    It exits without tearing the interpreter down: by then every file is written and closed
    (checkpoints, events, predictions) and only the interpreter's own clean-up is left, which
    took 0.4-0.5 s of a 1.8 s ``python -c "import torch"`` here, and 1.3-1.7 s in a process
    that also loaded torch._dynamo.
    """
    if stderr is not None:
        sys.stderr = open(stderr, "w", buffering=1)  # noqa: SIM115 (the process's own stderr)
    from logreg_torch.interrupts import critical, handle_sigint

    # Installed first: a Ctrl-C while the figures' process starts is an exit like any other
    # (130, one line), not a traceback; ``main`` runs inside this handler.
    with handle_sigint(restore=False):
        try:
            with critical():  # an import or a fork cut in the middle
                _start_figures(sys.argv[1:] if argv is None else list(argv))
            code = main(argv, exiting=True)
        except KeyboardInterrupt as e:  # before main's own handling starts
            code = _interrupted(e)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:  # a closed pipe (logreg-torch config | head): nothing more can be said
        pass
    os._exit(code)


if __name__ == "__main__":
    console_main()
