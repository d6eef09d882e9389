"""data.streaming under a memory cap: training from memory-mapped .npy files a chunk at a time.

Streaming must stay under a memory cap that the in-memory path cannot, train the model of the
uncapped in-memory fit there, and peak at one chunk and the validation rows, not the file.
Each streamed fit runs in a fresh process on an X.npy of 114 MiB that scripts/make_dataset.py
writes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from data_streaming_helpers import weights
from script_modules import load

from logreg_torch.config import load_config
from logreg_torch.train import fit

pytestmark = pytest.mark.usefixtures("no_figures")

# ----------------------------------------------------------------------------- memory cap

# Runs in a fresh process with RLIMIT_DATA set a margin above its own footprint. On Linux
# >= 4.7 RLIMIT_DATA counts the heap and private writable mappings (every numpy/torch buffer),
# not the read-only shared memory map of X.npy: exactly "what training holds in memory".
# Under that one cap it trains in memory first (which must run out of memory), then streaming.
CHILD = textwrap.dedent("""
    import json, resource, sys
    import torch
    import logreg_torch.tracking
    from logreg_torch.config import load_config
    from logreg_torch.train import fit

    logreg_torch.tracking.figures_available = lambda: False  # as in the parent

    def status():
        fields = {}
        for line in open("/proc/self/status"):
            key, _, value = line.partition(":")
            if key in ("VmData", "VmHWM"):
                fields[key] = int(value.split()[0]) * 1024
        return fields

    overrides, tiny, big, runs, margin = json.loads(sys.argv[1])

    def run(path, streaming, name):
        return fit(load_config(None, [*overrides, f"data.path={path}",
                                      f"data.streaming={streaming}", f"log.run_dir={runs}/{name}"]))

    # A tiny fit first: fit imports torchmetrics, torch._dynamo, tensorboard and matplotlib
    # lazily (about 220 MB of VmData), which must not count against the margin.
    run(tiny, "false", "warm-memory")
    run(tiny, "true", "warm-stream")
    report = {"before": status()}
    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    resource.setrlimit(resource.RLIMIT_DATA, (report["before"]["VmData"] + margin, hard))
    try:
        run(big, "false", "memory")
        report["in_memory"] = "trained"
    except (MemoryError, RuntimeError) as e:  # numpy's or torch's allocator
        report["in_memory"] = f"{type(e).__name__}: {str(e).splitlines()[0]}"
    report["between"] = status()
    result = run(big, "true", "stream")
    report["after"] = status()
    report["weights"] = [p.detach().double().flatten().tolist() for p in result.model.parameters()]
    print(json.dumps(report))
""")
ROWS, FEATURES, MARGIN = 600_000, 50, 60 << 20  # X.npy: 114 MiB of float32; cap: +60 MiB
CAPPED = ("data.source=npy", "optim.name=lbfgs", "train.batch_size=null",
          "train.precision=fp32", "loss.l2=0.001", "train.epochs=2", "optim.max_iter=2",
          "data.chunk_size=20000", "log.histogram_every=0",
          # host memory is the point: on the CPU on every machine (CUDA's own host
          # allocations would count against the cap)
          "train.device=cpu",
          # Validation rows are read into memory by design; 5% of them (6 MB) leave the cap
          # to the training path (20% would be 24 MB of fp32 on their own).
          "data.val_fraction=0.05")


@pytest.fixture(scope="module")
def big_and_tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """X.npy of ROWS x FEATURES float32 (114 MiB), and a tiny one of the same width."""
    make_dataset = load("make_dataset")
    root = tmp_path_factory.mktemp("datasets")
    big, tiny = root / "big", root / "tiny"
    make_dataset.main([str(big), "--rows", str(ROWS), "--features", str(FEATURES)])
    make_dataset.main([str(tiny), "--rows", "2000", "--features", str(FEATURES), "--seed", "1"])
    return big, tiny


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_streaming_fits_under_a_memory_cap_that_stops_in_memory_training(
        tmp_path: Path, big_and_tiny: tuple[Path, Path]) -> None:
    big, tiny = big_and_tiny
    size = (big / "X.npy").stat().st_size
    assert size > 1.5 * MARGIN
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    # One thread everywhere: on a busy small machine OpenMP's spinning makes every op crawl,
    # and the same thread count in both processes keeps fp32 sums in the same order.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [CAPPED, str(tiny), str(big), str(tmp_path / "runs"), MARGIN]
    child = subprocess.Popen([sys.executable, str(script), json.dumps(args)], env=env,
                             cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:  # the reference, while the child works: in memory, in this uncapped process
            cfg = load_config(None, [*CAPPED, f"data.path={big}", "data.streaming=false",
                                     f"log.run_dir={tmp_path / 'runs' / 'parent'}"])
            expected = weights(fit(cfg))
        finally:
            torch.set_num_threads(threads)
        out, err = child.communicate(timeout=300)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    assert child.returncode == 0, err[-3000:]

    report = json.loads(out.strip().splitlines()[-1])
    # The cap bites: training in memory runs out of it.
    assert report["in_memory"].startswith(("MemoryError", "_ArrayMemoryError", "RuntimeError"))
    assert "allocate" in report["in_memory"], report["in_memory"]
    # Streaming under the same cap trains the model of the uncapped in-memory fit.
    got = torch.tensor([w for p in report["weights"] for w in p], dtype=torch.float64)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-4)
    mib = {when: {k: v >> 20 for k, v in report[when].items()}
           for when in ("before", "between", "after")}
    print(f"\nX.npy {size >> 20} MiB; cap: VmData {mib['before']['VmData']} + {MARGIN >> 20} "
          f"MiB; in memory: {report['in_memory']}; VmData after it {mib['between']['VmData']} "
          f"MiB, after streaming {mib['after']['VmData']} MiB; VmHWM "
          f"{mib['before']['VmHWM']} -> {mib['between']['VmHWM']} -> {mib['after']['VmHWM']} "
          "MiB (VmHWM counts the mapped pages of X.npy too)")


# Peak RSS (VmHWM: anonymous memory and the file pages mapped into the process alike) of a
# streamed fit, in a fresh process, after a tiny fit has done the imports and first allocations.
PEAK_CHILD = textwrap.dedent("""
    import json, sys
    import logreg_torch.tracking
    from logreg_torch.config import load_config
    from logreg_torch.train import fit

    logreg_torch.tracking.figures_available = lambda: False

    def vm_hwm():
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmHWM:"))

    overrides, tiny, big, runs = json.loads(sys.argv[1])
    for path, name in ((tiny, "warm"), (big, "big")):
        before = vm_hwm()
        fit(load_config(None, [*overrides, f"data.path={path}", f"log.run_dir={runs}/{name}"]))
    print(json.dumps({"before": before, "after": vm_hwm()}))
""")
PEAK_MARGIN = 24 << 20


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_streaming_peak_rss_is_one_chunk_not_the_file(tmp_path: Path,
                                                      big_and_tiny: tuple[Path, Path]) -> None:
    # What a streamed fit holds: validation rows (5%, fp32), labels and split indices, one
    # chunk (float64 as read, then the fp32 tensor) and the read buffer; not X.npy, which is
    # read in full several times (the statistics, the validation rows, every L-BFGS pass).
    big, tiny = big_and_tiny
    overrides = [*CAPPED, "data.streaming=true"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", PEAK_CHILD, json.dumps(
        [overrides, str(tiny), str(big), str(tmp_path / "runs")])], env=env, cwd=tmp_path,
        capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    size = (big / "X.npy").stat().st_size
    chunk = 20_000 * FEATURES * (8 + 4)
    held = int(0.05 * ROWS) * FEATURES * 4 + ROWS * 4 * 8 + chunk + (1 << 20)
    added = report["after"] - report["before"]
    print(f"\nX.npy {size >> 20} MiB; peak RSS +{added >> 20} MiB over the warm process; "
          f"bound {(held + PEAK_MARGIN) >> 20} MiB (held {held >> 20} + {PEAK_MARGIN >> 20})")
    assert size > 4 * PEAK_MARGIN  # a map's pages would show: the file is 4.7x the margin
    assert added <= held + PEAK_MARGIN, (added >> 20, held >> 20)
