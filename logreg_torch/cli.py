"""``logreg-torch``: train | evaluate | predict | summary | config | explain.

A user mistake (a bad config, data file, checkpoint or argument) ends with one line on stderr
and exit code 2; a bug still shows its traceback.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn


class UsageError(ValueError):
    """A bad command-line argument."""


def _user_errors() -> tuple[type[Exception], ...]:
    from logreg_torch.checkpoint import CheckpointError
    from logreg_torch.config import ConfigError
    from logreg_torch.data import DataError
    from logreg_torch.inference import InferenceError
    from logreg_torch.runs import TrainingError
    from logreg_torch.runtime import DistributedError

    return (ConfigError, DataError, CheckpointError, TrainingError, DistributedError, UsageError,
            InferenceError)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="logreg-torch",
        description="Logistic regression in PyTorch with a hand-written binary cross-entropy.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a model from a YAML config")
    p.add_argument("config", help="YAML config file, e.g. configs/default.yaml")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. optim.lr=0.1")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    p.add_argument("--timings", action="store_true",
                   help="print seconds by stage (imports, data, setup, train, evaluate, "
                        "logging) as one JSON line on stderr")

    p = sub.add_parser("evaluate", help="print every metric of a checkpoint on a data split")
    p.add_argument("checkpoint", help="a last.pt or best.pt")
    p.add_argument("--data", help="a labeled CSV (default: the run's test split, else val)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p = sub.add_parser("predict", help="write the probability and label of each CSV row")
    p.add_argument("checkpoint")
    p.add_argument("input", help="CSV with the model's feature columns")
    p.add_argument("--output", "-o", required=True, help="where to write the predictions CSV")
    p.add_argument("--threshold", type=float, default=0.5, help="probability for class 1")

    p = sub.add_parser("config", help="print the resolved config")
    p.add_argument("config")
    p.add_argument("overrides", nargs="*")

    p = sub.add_parser("summary", help="coefficients with standard errors, z, p-values and "
                                       "intervals of a logistic model (as statsmodels' Logit)")
    p.add_argument("run", help="a run folder (its best.pt, else last.pt) or a checkpoint")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--alpha", type=float, default=0.05,
                   help="1 - confidence level of the intervals (default 0.05: 95%%)")

    p = sub.add_parser("explain", help="walk through log loss on the jacket/cardigan example")
    p.add_argument("--probs", help="comma-separated predicted probabilities of class 1")
    p.add_argument("--labels", help="comma-separated true classes (0 or 1)")
    return parser


def cmd_train(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    from logreg_torch.config import load_config
    from logreg_torch.fit import fit

    imports = time.perf_counter() - started  # torch and the training modules
    cfg = load_config(args.config, args.overrides)
    result = fit(cfg, quiet=args.quiet)
    if args.timings and os.environ.get("RANK", "0") == "0":
        timings = {"imports": imports, **result.extra.get("timings", {})}
        print(json.dumps({"timings": {k: round(v, 4) for k, v in timings.items()}}),
              file=sys.stderr)
    if not args.quiet and os.environ.get("RANK", "0") == "0":  # torchrun: rank 0 reports
        from logreg_torch.metrics import format_metrics_table

        last = result.history[-1] if result.history else {}
        print(f"trained {len(result.history)} epoch(s); final train loss "
              f"{last.get('train/loss', float('nan')):.4f}")
        val = {k[4:]: v for k, v in last.items() if k.startswith("val/")}
        if val:
            print("validation metrics:\n" + format_metrics_table(val))
        if result.test:
            print("test metrics:\n" + format_metrics_table(result.test))
        print(f"run folder: {result.run_dir} (checkpoints last.pt, best.pt)")
        print("see the curves with: tensorboard --logdir runs")
        if result.ending is not None:  # the last line says how the run ended
            print(result.ending.message)
    return 0


def _load(checkpoint: str):
    from logreg_torch.checkpoint import load_checkpoint
    from logreg_torch.predict import model_from_checkpoint

    state = load_checkpoint(checkpoint)
    return state, model_from_checkpoint(state)


def cmd_evaluate(args: argparse.Namespace) -> int:
    import torch

    from logreg_torch.data import prepare, read_labeled
    from logreg_torch.loop import evaluate
    from logreg_torch.objective import make_objective
    from logreg_torch.predict import resolved_config_of

    state, model = _load(args.checkpoint)
    cfg = resolved_config_of(state)
    dtype = next(model.parameters()).dtype
    if args.data:
        X, y = read_labeled(args.data, cfg.data.target or _bundled_target(cfg),
                            state["feature_names"], state["label_map"], state["preprocessing"])
        X, y = torch.tensor(X, dtype=dtype), torch.tensor(y, dtype=dtype)
        where = args.data
    else:
        data = prepare(cfg.data, cfg.train.seed, dtype=dtype)
        (X, y), where = (data.test, "test split") if len(data.test[0]) else (data.val, "val split")
        if len(X) == 0:
            (X, y), where = data.train, "train split (the run held nothing out)"
    objective = make_objective(cfg, y, torch.device("cpu"), dtype)
    metrics = evaluate(model, objective, X, y)
    if args.json:
        print(json.dumps({"data": where, "n": len(X), **metrics}, indent=2))
    else:
        from logreg_torch.metrics import format_metrics_table

        print(f"{args.checkpoint} on {where} ({len(X)} rows)")
        print(format_metrics_table(metrics))
    return 0


def _bundled_target(cfg) -> str:
    from logreg_torch.data import BUNDLED

    return BUNDLED[cfg.data.source][1] if cfg.data.source in BUNDLED else "target"


def cmd_predict(args: argparse.Namespace) -> int:
    import torch

    from logreg_torch.checkpoint import atomic_write
    from logreg_torch.data import read_csv, read_features_csv
    from logreg_torch.predict import predict_proba

    if not 0.0 <= args.threshold <= 1.0:
        raise UsageError(f"--threshold must be in [0, 1], got {args.threshold}")
    if Path(args.output).is_dir():
        raise UsageError(f"--output {args.output} is a folder; pass a file name such as "
                         f"{Path(args.output) / 'predictions.csv'}")
    state, model = _load(args.checkpoint)
    X, rows = read_features_csv(args.input, state["feature_names"], state["preprocessing"])
    dtype = next(model.parameters()).dtype
    probs = predict_proba(model, torch.tensor(X, dtype=dtype)).tolist()
    by_class = {v: k for k, v in state["label_map"].items()}
    header = read_csv(args.input).header
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*header, "probability", "prediction"])
    for row, p in zip(rows, probs, strict=True):
        writer.writerow([*row, f"{p:.6f}", by_class[int(p >= args.threshold)]])
    try:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(args.output, lambda f: f.write(buf.getvalue().encode("utf-8")))
    except OSError as e:  # a full disk, no permission, a file where a folder should be
        where = f" ({e.filename})" if e.filename else ""
        raise UsageError(f"cannot write --output {args.output}: {e.strerror or e}{where}") from None
    print(f"wrote {len(rows)} predictions to {args.output}")
    return 0


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


def cmd_summary(args: argparse.Namespace) -> int:
    from logreg_torch.inference import summarize

    table = summarize(args.run, alpha=args.alpha)
    print(table.to_json() if args.json else table.format())
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


def main(argv: Sequence[str] | None = None) -> int:
    _quiet_openmp_threads()
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
    try:
        return COMMANDS[args.command](args)
    except _user_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print(f"\n{e}" if str(e) else "\ninterrupted", file=sys.stderr)
        return 130


def run() -> NoReturn:
    """The ``logreg-torch`` command: ``main()``, then exit without tearing the interpreter down.

    By then every file is written and closed (checkpoints, events, predictions) and only the
    interpreter's own clean-up is left: freeing torch's modules took 0.4-0.5 s of a 1.8 s
    ``python -c "import torch"`` here, and a process that also loaded torch._dynamo spent
    1.3-1.7 s on it.
    """
    code = main()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:  # a closed pipe (logreg-torch config | head): nothing more can be said
        pass
    os._exit(code)


if __name__ == "__main__":
    run()
