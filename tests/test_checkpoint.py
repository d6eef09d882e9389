"""Checkpoints: atomic writes, safe loads, one clear CheckpointError for anything else."""

from __future__ import annotations

import os

import pytest
import torch

from logreg_torch.checkpoint import (
    FORMAT,
    CheckpointError,
    atomic_write,
    load_checkpoint,
    save_checkpoint,
)


def minimal_state() -> dict:
    return {"model": {"linear.weight": torch.arange(3.0).reshape(1, 3)},
            "model_args": {"name": "logistic", "in_features": 3, "hidden": [], "dropout": 0.0,
                           "bias": False},
            "config": {"train": {"precision": "fp32"}}, "epoch": 2, "step": 7,
            "preprocessing": {"standardize": False, "mean": [0.0] * 3, "std": [1.0] * 3},
            "label_map": {"no": 0, "yes": 1}, "feature_names": ["a", "b", "c"],
            "rng": {"torch": torch.get_rng_state()}}


def test_atomic_write_replaces_the_file(tmp_path) -> None:
    path = tmp_path / "file.bin"
    path.write_bytes(b"old")
    atomic_write(path, lambda f: f.write(b"new contents"))
    assert path.read_bytes() == b"new contents"
    assert os.listdir(tmp_path) == ["file.bin"]


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(minimal_state(), path)
    before = path.read_bytes()

    def write_then_crash(f) -> None:
        f.write(b"\x00" * 1000)  # half a checkpoint, then a full disk
        f.flush()
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        atomic_write(path, write_then_crash)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["last.pt"]  # no temp file left behind
    assert load_checkpoint(path)["epoch"] == 2


def test_atomic_write_keeps_the_old_file_on_ctrl_c(tmp_path) -> None:
    path = tmp_path / "out.csv"
    path.write_text("a,b\n1,2\n")

    def interrupted(f) -> None:
        f.write(b"a,b\n")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, interrupted)
    assert path.read_text() == "a,b\n1,2\n"
    assert os.listdir(tmp_path) == ["out.csv"]


def test_round_trip_with_weights_only(tmp_path) -> None:
    path = tmp_path / "ckpt.pt"
    save_checkpoint(minimal_state(), path)
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == FORMAT
    state = load_checkpoint(path)
    assert torch.equal(state["model"]["linear.weight"], torch.arange(3.0).reshape(1, 3))
    assert state["label_map"] == {"no": 0, "yes": 1}
    assert torch.equal(state["rng"]["torch"], minimal_state()["rng"]["torch"])


def test_load_errors_name_the_file(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="is a folder.*last.pt"):
        load_checkpoint(tmp_path)

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(os.urandom(2048))
    with pytest.raises(CheckpointError, match="corrupted") as info:
        load_checkpoint(garbage)
    assert str(garbage) in str(info.value) and "\n" not in str(info.value)
    assert "weights_only" not in str(info.value)

    truncated = tmp_path / "truncated.pt"
    save_checkpoint(minimal_state(), truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(truncated)

    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(CheckpointError, match="not a logreg_torch checkpoint"):
        load_checkpoint(foreign)

    partial = tmp_path / "partial.pt"
    state = minimal_state()
    del state["label_map"]
    save_checkpoint(state, partial)
    with pytest.raises(CheckpointError, match="lacks label_map"):
        load_checkpoint(partial)


def test_pickled_code_is_never_run(tmp_path) -> None:
    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    path = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "model": Evil()}, path)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    assert not (tmp_path / "pwned").exists()


def test_ctrl_c_during_a_checkpoint_write_waits_for_the_complete_file(tmp_path,
                                                                       monkeypatch) -> None:
    # A real SIGINT lands in the middle of torch.save's writes. Cut there, torch's zip writer
    # fails in its own clean-up and the interrupt becomes a RuntimeError (exit 1): the write
    # must finish, the file must be complete, and only then the KeyboardInterrupt comes.
    import signal

    from logreg_torch.interrupts import handle_sigint

    state = {"model": {"w": torch.arange(100_000.0)}, "epoch": 3}
    path = tmp_path / "last.pt"
    sent = []
    real_save = torch.save

    def save_with_sigint(obj, f, *args, **kwargs):
        real_write = f.write

        def write(data):
            if not sent:
                sent.append(1)
                signal.raise_signal(signal.SIGINT)
            return real_write(data)

        f.write = write
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_with_sigint)
    with handle_sigint(), pytest.raises(KeyboardInterrupt):
        save_checkpoint(state, path)
    monkeypatch.undo()
    assert sent == [1]
    assert torch.equal(torch.load(path, weights_only=True)["model"]["w"], state["model"]["w"])
