"""The commands that read a finished run's checkpoint: ``evaluate``, ``predict`` and
``summary`` (``logreg_torch.cli`` parses the arguments and reports the errors)."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Sequence
from pathlib import Path


class UsageError(ValueError):
    """A bad command-line argument."""


def resolve_checkpoints(paths: Sequence[str]) -> tuple[Path, list[str]]:
    """The checkpoint to use for ``paths`` (files, run folders or globs): the newest of them
    by modification time, folders without a checkpoint passed over; and the lines for stderr
    that say which file was picked and which folders were skipped (whenever it is not the one
    path given), to print once the checkpoint has loaded (a refused command: one line)."""
    from logreg_torch.checkpoint import resolve_checkpoints as resolve

    notes: list[str] = []
    return resolve(paths, say=notes.append), notes


def _say(notes: list[str]) -> None:
    for line in notes:
        print(line, file=sys.stderr)


def _load(paths: Sequence[str]):
    """(checkpoint path, state, model) for the paths a command was given."""
    from logreg_torch.checkpoint import load_checkpoint
    from logreg_torch.predict import model_from_checkpoint

    checkpoint, notes = resolve_checkpoints(paths)
    state = load_checkpoint(checkpoint)
    model = model_from_checkpoint(state)
    _say(notes)
    return checkpoint, state, model


def cmd_evaluate(args: argparse.Namespace) -> int:
    import torch

    from logreg_torch.data import read_rows
    from logreg_torch.loop import evaluate
    from logreg_torch.objective import make_objective
    from logreg_torch.predict import resolved_config_of

    checkpoint, state, model = _load(args.checkpoint)
    cfg = resolved_config_of(state)
    dtype = next(model.parameters()).dtype
    if args.data:
        rows = read_rows(args.data, state["feature_names"], state["preprocessing"],
                         state["label_map"], cfg.data.target or _bundled_target(cfg), labels=True)
        X, y = torch.tensor(rows.X, dtype=dtype), torch.tensor(rows.y, dtype=dtype)
        where = args.data
    else:
        X, y, where = _held_out(cfg, dtype)
    objective = make_objective(cfg, y, torch.device("cpu"), dtype)
    metrics = evaluate(model, objective, X, y)
    if args.json:
        print(json.dumps({"data": where, "n": len(X), **metrics}, indent=2))
    else:
        from logreg_torch.metrics import format_metrics_table

        print(f"{checkpoint} on {where} ({len(X)} rows)")
        print(format_metrics_table(metrics, note=loss_note_of(cfg)))
    return 0


def _held_out(cfg, dtype):
    """The run's test split, else its validation split, else its training rows, read as the
    run read them (a streamed run: from disk, its held-out rows only)."""
    from logreg_torch.data import prepare, prepare_streaming

    if cfg.data.streaming:
        data = prepare_streaming(cfg.data, cfg.train.seed, dtype=dtype)[1]
    else:
        data = prepare(cfg.data, cfg.train.seed, dtype=dtype)
    (X, y), where = (data.test, "test split") if len(data.test[0]) else (data.val, "val split")
    if len(X) == 0 and cfg.data.streaming:
        raise UsageError(f"the run held no rows out and streamed its training rows from "
                         f"{cfg.data.path}; pass the rows to score with --data")
    if len(X) == 0:
        (X, y), where = data.train, "train split (the run held nothing out)"
    return X, y, where


def loss_note_of(cfg) -> str | None:
    from logreg_torch.metrics import loss_note

    return loss_note(cfg.loss.pos_weight, cfg.loss.label_smoothing)


def _bundled_target(cfg) -> str:
    from logreg_torch.data import BUNDLED

    return BUNDLED[cfg.data.source][1] if cfg.data.source in BUNDLED else "target"


def cmd_predict(args: argparse.Namespace) -> int:
    import torch

    from logreg_torch.data import read_rows
    from logreg_torch.predict import predict_proba

    if not 0.0 <= args.threshold <= 1.0:
        raise UsageError(f"--threshold must be in [0, 1], got {args.threshold}")
    if Path(args.output).is_dir():
        raise UsageError(f"--output {args.output} is a folder; pass a file name such as "
                         f"{Path(args.output) / 'predictions.csv'}")
    _, state, model = _load(args.checkpoint)
    rows = read_rows(args.input, state["feature_names"], state["preprocessing"],
                     state["label_map"])
    dtype = next(model.parameters()).dtype
    probs = predict_proba(model, torch.tensor(rows.X, dtype=dtype)).double().numpy()
    if Path(args.output).suffix.lower() == ".npy":
        write = _npy_writer(probs)
    else:  # arrays have no rows to echo: then only the two new columns
        write = _csv_writer(rows.header or [], rows.rows or [[]] * len(probs), probs,
                            state["label_map"], args.threshold)
    _write_output(args.output, write)
    print(f"wrote {len(probs)} predictions to {args.output}")
    return 0


def _npy_writer(probs):
    import numpy as np

    return lambda f: np.save(f, probs, allow_pickle=False)


def _csv_writer(header, rows, probs, label_map, threshold):
    by_class = {v: k for k, v in label_map.items()}
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*header, "probability", "prediction"])
    for row, p in zip(rows, probs.tolist(), strict=True):
        writer.writerow([*row, f"{p:.6f}", by_class[int(p >= threshold)]])
    return lambda f: f.write(buf.getvalue().encode("utf-8"))


def _write_output(output: str, write) -> None:
    from logreg_torch.checkpoint import atomic_write

    try:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(output, write)
    except OSError as e:  # a full disk, no permission, a file where a folder should be
        where = f" ({e.filename})" if e.filename else ""
        raise UsageError(f"cannot write --output {output}: {e.strerror or e}{where}") from None


def cmd_summary(args: argparse.Namespace) -> int:
    from logreg_torch.inference import summarize

    checkpoint, notes = resolve_checkpoints(args.run)
    table = summarize(checkpoint, alpha=args.alpha)
    _say(notes)
    print(table.to_json() if args.json else table.format())
    return 0
