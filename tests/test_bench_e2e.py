"""scripts/bench_e2e.py: the memory rows measure each child process, not the benchmark's own
memory (``benchmark.py --quick`` holds torch and data, and printed its own peak for both)."""

from __future__ import annotations

import os
import sys

from script_modules import load

TOUCH = "x = bytearray({mib} << 20)\nfor i in range(0, len(x), 4096):\n    x[i] = 1\n"


def test_peak_rss_is_the_childs_own() -> None:
    e2e = load("bench_e2e")
    held = bytearray(400 << 20)  # the benchmark process, large when it starts its children
    held[::4096] = b"\1" * len(held[::4096])
    env = dict(os.environ)
    _, small, _, _ = e2e.run([sys.executable, "-c", "pass"], env)
    _, large, _, _ = e2e.run([sys.executable, "-c", TOUCH.format(mib=150)], env)
    assert small < 100, small  # a bare interpreter: ~10 MB, not this process's 400+
    assert 150 < large < 250, large
    del held
