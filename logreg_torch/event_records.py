"""How the run's TensorBoard records are written cheaply: the records' checksums in C, and
several summaries of one step merged into one event.

Every record of an events file carries two masked CRC32C checksums. TensorBoard's writer
(``tensorboard.summary.writer.record_writer``) computes them with a pure-Python loop over every
byte, under the GIL, in its writer thread: the three figure PNGs and the weight histograms of a
small run cost more there than drawing them. ``google-crc32c`` computes the same 32 bits in C;
``use_fast_crc`` hands it to the record writer when it is importable (a test holds it to
TensorBoard's own function, record by record). Without it the records are written as before.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

_MASK_DELTA = 0xA282EAD8  # TFRecord's checksum mask (tensorflow/core/lib/hash/crc32c.h)


def fast_masked_crc32c() -> Any:
    """TFRecord's masked CRC32C of bytes computed by ``google_crc32c``'s C code, or None when
    that package (or its C extension) is missing."""
    try:
        import google_crc32c
    except ImportError:
        return None
    if getattr(google_crc32c, "implementation", "c") != "c":
        return None  # its own pure-Python fallback is no faster than TensorBoard's
    value = google_crc32c.value

    def masked_crc32c(data: bytes) -> int:
        crc = value(data)
        return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF

    return masked_crc32c


def use_fast_crc() -> bool:
    """Make TensorBoard's record writer take the C checksum (for every writer of this process;
    the bytes written are the same). True when it does."""
    from tensorboard.summary.writer import record_writer

    fast = fast_masked_crc32c()
    if fast is None or not hasattr(record_writer, "masked_crc32c"):
        return False
    record_writer.masked_crc32c = fast
    return True


def merged(summaries: Iterable[Any]) -> Any:
    """One ``Summary`` holding the values of all of ``summaries``: written as one event, it
    reads back as the same tags and values (TensorBoard reads every value of an event), with one
    record's framing, checksums and queue hand-off instead of one per tag."""
    from tensorboard.compat.proto.summary_pb2 import Summary

    out = Summary()
    for summary in summaries:
        out.value.extend(summary.value)
    return out
