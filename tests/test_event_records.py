"""event_records.py: the C checksum is TensorBoard's checksum."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c
from tensorboard.summary.writer import record_writer

from logreg_torch.event_records import fast_masked_crc32c, use_fast_crc
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

