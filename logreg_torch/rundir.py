"""A run folder belongs to one run: what may go on in it, checked before anything is written.

A new run gets a folder of its own: ``runs/<name>-<time>`` (an exclusive mkdir), or
``log.run_dir`` when that holds no run yet. A resume goes on in its run's folder, and only when
the config describes the run its checkpoint holds (``check_resume``). While a run writes, its
process holds an exclusive lock on the folder (``flock`` on the folder itself: no file is added,
and the kernel drops the lock when the process ends, even by ``kill -9``), so that a second
process started at the same moment cannot write there too.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows: no flock; the folder checks still hold, the race is not closed
    fcntl = None


class RunFolderError(ValueError):
    """A command that would write into a run folder it does not own; one line for people."""


# What marks a folder as holding a run (a diverged run leaves config.yaml and events only).
RUN_FILES = ("config.yaml", "last.pt", "best.pt")
EVENTS = "events.out.tfevents.*"


def run_files(path: str | Path) -> list[str]:
    """The names in ``path`` that belong to a run (config, checkpoints, events), sorted."""
    path = Path(path)
    if not path.is_dir():
        return []
    names = [n for n in RUN_FILES if (path / n).exists()]
    return names + sorted(p.name for p in path.glob(EVENTS))


def _describe(names: list[str]) -> str:
    events = [n for n in names if n.startswith("events.")]
    shown = [n for n in names if not n.startswith("events.")]
    if events:
        shown.append("events" if len(events) == 1 else f"{len(events)} events files")
    return ", ".join(shown)


def check_free(run_dir: str | Path, resumed_from: str | Path | None = None) -> None:
    """Refuse a run into ``run_dir`` when another run is there: one that holds files of a run
    and is not the folder of the checkpoint being resumed (``resumed_from``)."""
    run_dir = Path(run_dir)
    names = run_files(run_dir)
    if not names:
        return
    own = resumed_from is not None and Path(resumed_from).resolve().parent == run_dir.resolve()
    if own:
        return
    how = (f"resume that run from its own folder (train.resume={run_dir}), or pick a new "
           f"log.run_dir" if resumed_from is not None else
           f"to go on with it: train.resume={run_dir}; for a new run pick another log.run_dir "
           f"(or none: runs/<name>-<time>)")
    raise RunFolderError(f"log.run_dir={run_dir} holds another run ({_describe(names)}); {how}")


@contextmanager
def folder_lock(run_dir: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on ``run_dir`` (which must exist) until the block ends; another
    process holding it is a RunFolderError. One lock per folder and process: taking it twice
    in one process is refused as well (flock locks belong to the open file)."""
    if fcntl is None:
        yield
        return
    fd = os.open(run_dir, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunFolderError(
                f"{run_dir} is being written by another run right now (another process holds "
                f"the folder's lock); wait for it to end and go on with it (train.resume="
                f"{run_dir}), or pick another log.run_dir") from None
        except OSError:  # a file system without flock (some network mounts): checks only
            pass
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


# --------------------------------------------------------------------------- resume

# Settings a resume may change: how long it goes on (epochs, a solver's budget and tolerance),
# when it stops early, where and how it runs, and what it logs. Any other setting made the
# state in the checkpoint (weights, optimizer moments, scheduler, split, standardization), so
# a resume under another value would not continue the run; it is refused, naming the key.
MAY_CHANGE = frozenset({
    "train.epochs", "train.resume", "train.checkpoint_every", "train.early_stopping_patience",
    "train.early_stopping_min_delta", "train.device", "train.dist_backend",
    "train.dist_timeout", "train.fast_path", "train.compile", "train.deterministic",
    "optim.max_iter", "optim.tol", "data.chunk_size", "loss.check_range",
    "log.run_dir", "log.log_every", "log.histogram_every",
})


def _flat(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def changed_settings(saved: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    """``key=new (the run: old)`` for each setting a resume may not change; keys that one of
    the two configs lacks (a checkpoint from an older version) are not compared."""
    old, new = _flat(saved), _flat(wanted)
    return [f"{k}={new[k]} (the run: {old[k]})" for k in new
            if k in old and k not in MAY_CHANGE and new[k] != old[k]]


def check_resume(checkpoint: str | Path, state: Mapping[str, Any],
                 wanted: Mapping[str, Any]) -> None:
    """Refuse, in one line naming each setting, a resume whose config (``wanted``, a config
    as a nested dict) differs from the checkpoint's in a setting that made its state."""
    changed = changed_settings(state.get("config", {}), wanted)
    if changed:
        raise RunFolderError(
            f"cannot resume from {checkpoint}: {'; '.join(changed)}; a resume continues its run "
            f"as it was set up (it may change train.epochs, optim.max_iter, optim.tol, early "
            f"stopping, the device and logging); to train with other settings start a new run "
            f"without train.resume")

