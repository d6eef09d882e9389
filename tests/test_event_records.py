"""event_records.py: the C checksum is TensorBoard's checksum, and a merged summary reads back
as the summaries it merges."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tensorboard.backend.event_processing import event_accumulator as ea
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c
from tensorboard.summary.writer import record_writer

from logreg_torch.event_records import fast_masked_crc32c, merged, use_fast_crc
from logreg_torch.tracking import TensorBoardLogger

fast = fast_masked_crc32c()
needs_c = pytest.mark.skipif(fast is None, reason="google-crc32c (C) not installed")


@needs_c
@pytest.mark.parametrize("size", [0, 1, 7, 8, 12, 255, 4096, 65537])
def test_c_checksum_is_tensorboards_on_every_record_size(size: int) -> None:
    data = os.urandom(size)
    assert fast(data) == masked_crc32c(data)


@needs_c
def test_c_checksum_on_known_bytes() -> None:
    # Bytes whose masking overflows 32 bits and bytes with a zero CRC's neighbourhood.
    for data in (b"", b"\x00" * 32, b"\xff" * 32, b"123456789", bytes(range(256))):
        assert fast(data) == masked_crc32c(data)


@needs_c
def test_records_written_are_byte_for_byte_the_same(tmp_path: Path) -> None:
    """The same records through TensorBoard's writer with each checksum: identical files."""
    payloads = [os.urandom(n) for n in (0, 5, 300, 70_000)]
    files = {}
    original = record_writer.masked_crc32c
    try:
        for name, crc in (("python", masked_crc32c), ("c", fast)):
            record_writer.masked_crc32c = crc
            path = tmp_path / name
            with open(path, "wb") as f:
                writer = record_writer.RecordWriter(f)
                for data in payloads:
                    writer.write(data)
            files[name] = path.read_bytes()
    finally:
        record_writer.masked_crc32c = original
    assert files["c"] == files["python"] and len(files["c"]) == sum(
        len(p) + 16 for p in payloads)


def test_the_logger_installs_the_c_checksum_when_there_is_one(tmp_path: Path) -> None:
    original = record_writer.masked_crc32c
    try:
        record_writer.masked_crc32c = masked_crc32c
        TensorBoardLogger(tmp_path / "run").close()
        installed = record_writer.masked_crc32c
        assert (installed is not masked_crc32c) == (fast is not None)
        assert use_fast_crc() == (fast is not None)
    finally:
        record_writer.masked_crc32c = original


def _events(run_dir: Path) -> list:
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    (path,) = run_dir.glob("events.out.tfevents.*")
    return [e for e in EventFileLoader(str(path)).Load() if e.HasField("summary")]


def test_a_dict_of_scalars_is_one_event_with_every_tag(tmp_path: Path) -> None:
    with TensorBoardLogger(tmp_path) as logger:
        logger.log_dict({"loss": 0.5, "accuracy": 0.75, "f1": 0.25}, step=3, prefix="val")
        logger.log_dict({}, step=4)  # nothing to write: no event
    (event,) = _events(tmp_path)
    assert event.step == 3 and [v.tag for v in event.summary.value] == [
        "val/loss", "val/accuracy", "val/f1"]
    acc = ea.EventAccumulator(str(tmp_path)).Reload()
    assert sorted(acc.Tags()[ea.SCALARS]) == ["val/accuracy", "val/f1", "val/loss"]
    assert [(e.step, e.value) for e in acc.Scalars("val/accuracy")] == [(3, 0.75)]


def test_a_models_histograms_are_one_event(tmp_path: Path) -> None:
    from logreg_torch.model import MLP

    model = MLP(4, [3])
    with TensorBoardLogger(tmp_path) as logger:
        logger.log_histograms(model, step=2)
    (event,) = _events(tmp_path)
    names = [f"weights/{n}" for n, _ in model.named_parameters()]
    assert [v.tag for v in event.summary.value] == names and len(names) == 4
    acc = ea.EventAccumulator(str(tmp_path), size_guidance={ea.HISTOGRAMS: 0}).Reload()
    assert sorted(acc.Tags()[ea.HISTOGRAMS]) == sorted(names)
    for name, param in model.named_parameters():
        (h,) = acc.Histograms(f"weights/{name}")
        assert h.step == 2 and h.histogram_value.num == param.numel()


def test_merged_keeps_every_value_in_order() -> None:
    from torch.utils.tensorboard.summary import scalar

    out = merged([scalar("a", 1.0), scalar("b", 2.0), merged([])])
    assert [(v.tag, v.simple_value) for v in out.value] == [("a", 1.0), ("b", 2.0)]
