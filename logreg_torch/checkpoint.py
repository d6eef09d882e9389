"""Checkpoints: one dict, written atomically, read back with ``weights_only=True``."""

from __future__ import annotations

import errno
import glob
import os
import queue
import tempfile
import threading
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from logreg_torch.interrupts import critical

FORMAT = "logreg_torch/1"
REQUIRED = ("format", "model", "model_args", "config", "epoch", "step", "preprocessing",
            "label_map", "feature_names")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; one line naming the file and the problem."""


def atomic_write(path: str | Path, write) -> None:
    """Call ``write(file)`` on a temp file beside ``path``, then rename it over ``path``.

    A crash or a full disk mid-write leaves the previous file untouched: os.replace is atomic
    on POSIX and Windows when both names are on one file system.
    """
    # Ctrl-C waits for the write to finish: cut inside torch.save, the zip writer's own
    # clean-up fails and turns the interrupt into a RuntimeError (exit 1, not 130).
    with critical():
        commit(write_temp(path, write), path)


def write_temp(path: str | Path, write) -> Path:
    """The first half of ``atomic_write``: ``write(file)`` into a new temp file beside
    ``path``, handed to the OS; its name. A failed write removes it."""
    path = Path(path)
    with critical():
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual file mode
            with os.fdopen(fd, "wb") as f:
                write(f)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return Path(tmp)


def commit(tmp: Path, path: str | Path) -> None:
    """The second half: the temp file's bytes to the disk (fsync), then renamed over
    ``path``. A failure removes the temp file and leaves ``path`` as it was."""
    try:
        fd = os.open(tmp, os.O_RDWR)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class BackgroundCommits:
    """``commit`` in a thread, in the order submitted: a run's checkpoints go to the disk
    while it trains. The fsync is most of a small checkpoint's cost (6 of 8 ms on this
    project's machine; 45 of them were 0.42 s of configs/mlp.yaml) and holds no lock, so the
    next epoch runs meanwhile. ``wait`` returns once the files submitted are in place; after
    a failure the later submissions are dropped (their temp files removed) and ``wait``
    returns the error with the ``info`` it was submitted with."""

    def __init__(self) -> None:
        self._jobs: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._done = threading.Condition()
        self._pending = 0  # submitted, not yet committed
        self.failed: tuple[OSError, Any] | None = None

    def submit(self, tmp: Path, path: Path, info: Any = None) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="checkpoint-commits",
                                            daemon=True)
            self._thread.start()
        # Counted and queued together: Ctrl-C between the two would leave a count that never
        # comes down, and ``wait`` (which Ctrl-C does not cut) would hang the run's exit.
        with critical():
            with self._done:
                self._pending += 1
            self._jobs.put((tmp, path, info))

    def _run(self) -> None:
        while True:
            tmp, path, info = self._jobs.get()
            try:
                if self.failed is None:
                    commit(tmp, path)
                else:
                    tmp.unlink(missing_ok=True)
            except OSError as e:
                self.failed = (e, info)
            finally:
                with self._done:
                    self._pending -= 1
                    self._done.notify_all()

    def wait(self) -> tuple[OSError, Any] | None:
        """Block until every submitted file is committed (Ctrl-C waits too); the failure,
        if one happened."""
        with critical(), self._done:
            self._done.wait_for(lambda: self._pending == 0)
        return self.failed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_checkpoint(state: dict[str, Any], path: str | Path,
                    commits: BackgroundCommits | None = None, info: Any = None) -> None:
    """Write ``state`` to ``path`` atomically. A failed write (a full disk, say) raises
    CheckpointError and leaves the file that was at ``path`` as it was. With ``commits`` the
    bytes are written here and the fsync and rename are left to it, ``info`` with them
    (``commits.wait()`` and ``write_error`` for its failures)."""
    try:
        if commits is None:
            atomic_write(path, lambda f: torch.save({"format": FORMAT, **state}, f))
        else:
            with critical():  # a temp file written is a temp file handed over
                tmp = write_temp(path, lambda f: torch.save({"format": FORMAT, **state}, f))
                commits.submit(tmp, Path(path), info)
    except OSError as e:
        raise write_error(e, path) from None


def write_error(e: OSError, path: str | Path) -> CheckpointError:
    """The one line for a checkpoint that could not be written."""
    code = errno.errorcode.get(e.errno or 0)
    reason = f"{e.strerror} ({code})" if e.strerror and code else str(e)
    return CheckpointError(f"cannot write checkpoint {path}: {reason}; the file there "
                           f"before, if any, is unchanged")


def resolve_checkpoint(path: str | Path, prefer: tuple[str, ...] = ("best.pt", "last.pt")
                       ) -> Path:
    """``path`` itself when it is a file; for a run folder the first of ``prefer`` in it.

    A folder holding none of them is a CheckpointError naming what it looked for.
    """
    path = Path(path)
    if not path.is_dir():
        return path
    for name in prefer:
        if (path / name).is_file():
            return path / name
    raise CheckpointError(f"{path} is a folder without {' or '.join(prefer)}; pass a run "
                          f"folder (runs/<name>-<time>) or a checkpoint file")


def resolve_checkpoints(paths: Sequence[str | Path],
                        prefer: tuple[str, ...] = ("best.pt", "last.pt"),
                        say: Callable[[str], None] | None = None) -> Path:
    """The checkpoint to use for ``paths``: checkpoint files, run folders (the first of
    ``prefer`` in each) or glob patterns (``runs/sgd-*``, as a quoted argument or in
    ``train.resume``); of several, the newest by modification time.

    Folders holding none of ``prefer`` (a run that ended before its first checkpoint) are
    passed over when others remain; ``say`` (a line for stderr) names them and the file
    picked, whenever that is not the one path given.
    """
    given = [Path(p) for p in _expand(paths)]
    found: list[Path] = []
    skipped: list[Path] = []
    for path in given:
        if path.is_dir():
            pick = next((path / n for n in prefer if (path / n).is_file()), None)
            (found if pick else skipped).append(pick or path)
        else:  # a file, or a path that does not exist (load_checkpoint says so)
            found.append(path)
    if not found:
        if len(skipped) == 1:
            return resolve_checkpoint(skipped[0], prefer)  # its own one-line error
        raise CheckpointError(f"none of the {len(skipped)} folders given holds "
                              f"{' or '.join(prefer)}: {', '.join(map(str, skipped))}")
    existing = [p for p in found if p.is_file()]
    chosen = max(existing, key=lambda p: p.stat().st_mtime) if existing else found[0]
    if say is not None:
        if skipped:
            say(f"skipped {len(skipped)} folder{'s' if len(skipped) > 1 else ''} without "
                f"{' or '.join(prefer)}: {', '.join(map(str, skipped))}")
        if len(found) > 1:
            say(f"using {chosen}, the newest of {len(found)} checkpoints given")
        elif chosen != Path(paths[0]):
            say(f"using {chosen}")
    return chosen


def _expand(paths: Sequence[str | Path]) -> list[str]:
    """Glob patterns that the shell left as they were (quoted, or inside key=value) expanded,
    in name order; a pattern matching nothing is a CheckpointError."""
    out: list[str] = []
    for p in map(str, paths):
        if any(c in p for c in "*?[") and not Path(p).exists():
            matches = sorted(glob.glob(p))
            if not matches:
                raise CheckpointError(f"{p} matches no file or folder")
            out += matches
        else:
            out.append(p)
    return out


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint we wrote; anything else is a CheckpointError, never arbitrary code
    (``weights_only=True`` unpickles tensors and plain containers only)."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; pass a checkpoint file such as "
                              f"{path / 'last.pt'}")
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        _verify_crcs(path)
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated, corrupted, or not a torch file at all
        # torch prefixes unpickling errors with advice to retry with weights_only=False, unsafe
        # for a file we cannot read; keep only the cause that follows it.
        text = str(e).split("WeightsUnpickler error:", 1)[-1].strip()
        first = text.splitlines()[0] if text else type(e).__name__
        raise CheckpointError(f"cannot read checkpoint {path}: it is truncated, corrupted or "
                              f"not a logreg_torch checkpoint ({first[:200]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a logreg_torch checkpoint (no {FORMAT!r} marker)")
    missing = [k for k in REQUIRED if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {', '.join(missing)}")
    return state


def _verify_crcs(path: Path) -> None:
    """Read every record of the zip archive, so that zipfile checks its CRC-32.

    torch.load does not: a flipped byte inside a tensor would load as a silently wrong weight
    (or RNG state). Records with CRC 0 were written with torch's CRC computation switched off
    (torch.serialization.set_crc32_options(False)) and cannot be checked.
    """
    if not zipfile.is_zipfile(path):
        return  # truncated, the legacy format or not a torch file: torch.load tells which
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if info.CRC == 0 and info.file_size:
                continue
            with archive.open(info) as f:
                while f.read(1 << 20):
                    pass
