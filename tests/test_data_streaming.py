"""data.streaming: training from memory-mapped .npy files a chunk at a time.

Streaming must train the same model as in memory (same objective, chunk by chunk), fit the
standardizer in one pass with numpy's numbers, stay under a memory cap that the in-memory path
cannot, and turn bad input into one clear line. scripts/make_dataset.py writes the files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from script_modules import load

from logreg_torch.config import ConfigError, load_config
from logreg_torch.data import (
    DataError,
    fit_standardizer,
    fit_standardizer_streaming,
    prepare,
    prepare_streaming,
    split_indices,
)
from logreg_torch.train import fit

N, D = 3001, 6
CHUNK = 700  # 3001 rows at val 0.1 / test 0.1 leave 2401 training rows: 3 full chunks + 301
# fp64 full-batch L-BFGS, so that "the same model" can be checked to rounding error.
LBFGS64 = ("data.source=npy", "optim.name=lbfgs", "train.batch_size=null",
           "train.precision=fp64", "loss.l2=0.001", "optim.lr=1", "train.epochs=2",
           "data.val_fraction=0.1", "data.test_fraction=0.1", f"data.chunk_size={CHUNK}",
           "log.histogram_every=0")


@pytest.fixture(autouse=True)
def _no_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    # Rendering the final matplotlib figures is most of a small fit's time; test_tracking
    # covers them.
    monkeypatch.setattr("logreg_torch.tracking.figures_available", lambda: False)


def arrays(n: int = N, d: int = D, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Features with offsets and scales far from standard (so standardization matters) and
    labels from a noisy linear rule (so the weights are not trivial)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) * rng.uniform(0.5, 20, d) + rng.uniform(-50, 50, d)
    z = (X - X.mean(0)) / X.std(0)
    y = (z @ rng.standard_normal(d) + rng.standard_normal(n) > 0).astype(np.float64)
    return X, y


def write_folder(path: Path, X: np.ndarray, y: np.ndarray) -> Path:
    path.mkdir(parents=True)
    np.save(path / "X.npy", X)
    np.save(path / "y.npy", y)
    return path


def write_shards(path: Path, X: np.ndarray, y: np.ndarray, sizes: list[int]) -> Path:
    path.mkdir(parents=True)
    bounds = np.cumsum([0, *sizes])
    assert bounds[-1] == len(X)
    for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        np.save(path / f"X-{i:05d}.npy", X[lo:hi])
        np.save(path / f"y-{i:05d}.npy", y[lo:hi])
    return path


def run(tmp_path: Path, data: Path, *overrides: str, name: str):
    cfg = load_config(None, [*LBFGS64, f"data.path={data}",
                             f"log.run_dir={tmp_path / 'runs' / name}", *overrides])
    return fit(cfg)


def weights(result) -> torch.Tensor:
    return torch.cat([p.detach().double().flatten() for p in result.model.parameters()])


# ----------------------------------------------------------------------------- same model


@pytest.mark.parametrize("standardize", [True, False])
def test_streaming_trains_the_in_memory_model(tmp_path: Path, standardize: bool) -> None:
    X, y = arrays()
    data = write_folder(tmp_path / "data", X, y)
    flag = f"data.standardize={str(standardize).lower()}"
    memory = run(tmp_path, data, flag, "data.streaming=false", name="memory")
    stream = run(tmp_path, data, flag, "data.streaming=true", name="stream")

    # Far from the start (so a wrong objective would show), equal to rounding error. Without
    # standardization the bias is about 90 and the problem ill-conditioned: hence the rtol.
    assert weights(memory).abs().max() > 0.5
    torch.testing.assert_close(weights(stream), weights(memory), rtol=1e-9, atol=1e-10)
    for key in ("val/loss", "val/roc_auc"):
        assert stream.history[-1][key] == pytest.approx(memory.history[-1][key], abs=1e-10)
    assert stream.test["loss"] == pytest.approx(memory.test["loss"], abs=1e-10)


def test_streaming_val_test_and_statistics_match_prepare(tmp_path: Path) -> None:
    X, y = arrays()
    # Chunks of 128: the 300 val and 300 test rows are read in three pieces each.
    cfg = load_config(None, [*LBFGS64, f"data.path={write_folder(tmp_path / 'd', X, y)}",
                             "data.chunk_size=128"])
    memory = prepare(cfg.data, seed=0, dtype=torch.float64)
    stream, streamed = prepare_streaming(cfg.data, seed=0, dtype=torch.float64)

    train, val, test = split_indices(N, 0.1, 0.1, seed=0)
    np.testing.assert_array_equal(stream.train, train)
    assert len(streamed.train[0]) == 0 and streamed.train[0].shape[1] == D
    assert [len(rows) for rows in stream.chunks()] == [128] * 18 + [97]
    np.testing.assert_allclose(streamed.preprocessing["mean"], X[train].mean(0), rtol=1e-13)
    np.testing.assert_allclose(streamed.preprocessing["std"], X[train].std(0), rtol=1e-13)
    for a, b in ((streamed.val, memory.val), (streamed.test, memory.test)):
        torch.testing.assert_close(a[0], b[0], rtol=0, atol=1e-12)
        assert torch.equal(a[1], b[1])


def test_shards_train_the_model_of_one_file_holding_the_same_rows(tmp_path: Path) -> None:
    X, y = arrays()
    one = write_folder(tmp_path / "one", X, y)
    # Uneven shards; chunks of 700 training rows straddle their boundaries.
    shards = write_shards(tmp_path / "shards", X, y, [1000, 1, 1499, 501])
    single = run(tmp_path, one, "data.streaming=true", name="one")
    sharded = run(tmp_path, shards, "data.streaming=true", name="shards")
    memory = run(tmp_path, one, "data.streaming=false", name="memory")

    # Same rows in the same chunks: the very same floating-point operations.
    assert torch.equal(weights(sharded), weights(single))
    torch.testing.assert_close(weights(sharded), weights(memory), rtol=0, atol=1e-10)


# ----------------------------------------------------------------------------- standardizer


def test_one_pass_standardizer_matches_numpy_on_uneven_chunks() -> None:
    rng = np.random.default_rng(1)
    # Large offsets and small spreads are where a one-pass sum of squares would lose digits.
    X = rng.standard_normal((5000, 5)) * [1e-3, 1.0, 30.0, 2.0, 0.1] + [1e4, -3.0, 0.0, 7e2, 5.0]
    X[:, 3] = 7e2 + 0.25  # a constant column
    cuts = [0, 1, 1, 38, 1024, 1025, 3000, 4999, 5000]  # sizes 1, 0, 37, 986, 1, ..., 1
    chunks = (X[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True))
    stats = fit_standardizer_streaming(chunks, width=5)

    expected_std = X.std(0, ddof=0)
    expected_std[3] = 1.0
    assert stats["std"][3] == 1.0

    def check(stats: dict) -> None:
        np.testing.assert_allclose(stats["mean"], X.mean(0), rtol=1e-12, atol=0)
        np.testing.assert_allclose(stats["std"][1:], expected_std[1:], rtol=1e-12, atol=0)
        # Column 0 (mean / std = 1e7) carries rounding of eps * 1e7 relative in any method;
        # a one-pass sum of squares would lose every digit of it, the pairwise merge keeps 9.
        np.testing.assert_allclose(stats["std"][0], expected_std[0], rtol=1e-9, atol=0)

    check(stats)
    # The two-pass in-memory standardizer agrees, in whatever chunks it reads.
    for chunk_size in (97, 65536):
        check(fit_standardizer(X, chunk_size))


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


# ----------------------------------------------------------------------------- bad input


def fit_error(tmp_path: Path, *overrides: str) -> str:
    cfg = load_config(None, ["data.streaming=true", "log.histogram_every=0", "train.epochs=1",
                             f"log.run_dir={tmp_path / 'runs'}", *overrides])
    with pytest.raises((DataError, ConfigError)) as info:
        fit(cfg)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("source", ["synthetic", "jackets", "csv"])
def test_streaming_needs_the_npy_source(tmp_path: Path, source: str) -> None:
    extra = [f"data.path={tmp_path / 'x.csv'}", "data.target=label"] if source == "csv" else []
    message = fit_error(tmp_path, f"data.source={source}", *extra)
    assert "data.streaming" in message and "npy" in message and source in message


def test_streaming_path_must_be_a_folder_with_x(tmp_path: Path) -> None:
    X, y = arrays(50, 3)
    folder = write_folder(tmp_path / "data", X, y)
    message = fit_error(tmp_path, "data.source=npy", f"data.path={folder / 'X.npy'}")
    assert str(folder / "X.npy") in message and "folder" in message

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no arrays here")
    message = fit_error(tmp_path, "data.source=npy", f"data.path={empty}")
    assert str(empty) in message and "X.npy" in message and "X-*.npy" in message

    message = fit_error(tmp_path, "data.source=npy", f"data.path={tmp_path / 'missing'}")
    assert str(tmp_path / "missing") in message


def test_shards_must_pair_up_and_agree_on_features(tmp_path: Path) -> None:
    X, y = arrays(60, 3)
    lonely = write_shards(tmp_path / "lonely", X, y, [30, 30])
    (lonely / "y-00001.npy").unlink()
    message = fit_error(tmp_path, "data.source=npy", f"data.path={lonely}")
    assert "X-00001.npy" in message and "y-00001.npy" in message

    mixed = write_shards(tmp_path / "mixed", X, y, [30, 30])
    np.save(mixed / "X-00001.npy", np.hstack([X[30:], X[30:, :1]]))  # 4 features, not 3
    message = fit_error(tmp_path, "data.source=npy", f"data.path={mixed}")
    assert "X-00001.npy" in message and "(30, 4)" in message and "3" in message

    short = write_shards(tmp_path / "short", X, y, [30, 30])
    np.save(short / "y-00001.npy", y[30:59])  # one label short
    message = fit_error(tmp_path, "data.source=npy", f"data.path={short}")
    assert "X-00001.npy" in message and "(29,)" in message


@pytest.mark.parametrize("standardize", ["true", "false"])
@pytest.mark.parametrize("layout", ["one file", "shards"])
def test_nan_in_a_later_training_chunk_names_its_row_and_column(
        tmp_path: Path, standardize: str, layout: str) -> None:
    X, y = arrays()
    train, _, _ = split_indices(N, 0.1, 0.1, seed=0)
    row = int(train[2 * CHUNK + 123])  # in the third chunk of training rows
    X[row, 4] = np.nan
    folder = (write_folder(tmp_path / "d", X, y) if layout == "one file"
              else write_shards(tmp_path / "d", X, y, [1000, 2001]))
    message = fit_error(tmp_path, *LBFGS64, f"data.path={folder}",
                        f"data.standardize={standardize}")
    assert f"row index {row}, column index 4" in message and "nan" in message
    assert str(folder) in message


# ----------------------------------------------------------------------------- make_dataset.py


@pytest.fixture(scope="module")
def make_dataset():
    return load("make_dataset")


def test_make_dataset_writes_x_and_y(tmp_path: Path, make_dataset) -> None:
    make_dataset.main([str(tmp_path / "out"), "--rows", "1000", "--features", "7"])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["X.npy", "y.npy"]
    X, y = np.load(tmp_path / "out" / "X.npy"), np.load(tmp_path / "out" / "y.npy")
    assert X.shape == (1000, 7) and X.dtype == np.float32 and np.isfinite(X).all()
    assert y.shape == (1000,) and set(np.unique(y)) == {0.0, 1.0}
    assert 0.2 < y.mean() < 0.8


def test_make_dataset_writes_shards(tmp_path: Path, make_dataset) -> None:
    out = tmp_path / "out"
    make_dataset.main([str(out), "--rows", "1000", "--features", "4", "--shard-rows", "300"])
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"{a}-{i:05d}.npy" for a in "Xy" for i in range(4)]
    sizes = [len(np.load(out / f"y-{i:05d}.npy")) for i in range(4)]
    assert sizes == [300, 300, 300, 100]
    X = np.concatenate([np.load(out / f"X-{i:05d}.npy") for i in range(4)])
    y = np.concatenate([np.load(out / f"y-{i:05d}.npy") for i in range(4)])
    assert X.shape == (1000, 4) and set(np.unique(y)) == {0.0, 1.0}
    # Streaming reads the shards as one data set.
    cfg = load_config(None, ["data.source=npy", f"data.path={out}", "data.streaming=true",
                             "data.chunk_size=128"])
    stream, _ = prepare_streaming(cfg.data, seed=0)
    assert stream.offsets.tolist() == [0, 300, 600, 900, 1000]
    np.testing.assert_array_equal(stream.take(np.arange(1000)), X.astype(np.float64))


def test_make_dataset_replaces_files_atomically(tmp_path: Path, make_dataset,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    make_dataset.main([str(out), "--rows", "100", "--features", "3"])
    before = (out / "X.npy").read_bytes()

    def torn_save(f, array) -> None:  # a crash halfway through writing
        f.write(b"\x93NUMPY half a file")
        raise OSError("disk full")

    with monkeypatch.context() as patch, pytest.raises(OSError, match="disk full"):
        patch.setattr(make_dataset.np, "save", torn_save)
        make_dataset.main([str(out), "--rows", "100", "--features", "3", "--seed", "5"])
    # The old X.npy is whole; nothing half-written took its name.
    assert (out / "X.npy").read_bytes() == before
    make_dataset.main([str(out), "--rows", "100", "--features", "3", "--seed", "5"])
    assert (out / "X.npy").read_bytes() != before
    assert sorted(p.name for p in out.iterdir()) == ["X.npy", "y.npy"]  # no temp files left


def test_streaming_newton_accumulates_the_hessian_chunk_by_chunk(tmp_path: Path) -> None:
    # Four chunks of rows: value, gradient and Hessian summed over them must give the
    # in-memory Newton solve, to rounding.
    X, y = arrays()
    data = write_folder(tmp_path / "data", X, y)
    newton = ("optim.name=newton", "optim.tol=1e-11")
    memory = run(tmp_path, data, *newton, "data.streaming=false", name="memory")
    stream = run(tmp_path, data, *newton, "data.streaming=true", name="stream")
    assert memory.ending.kind == stream.ending.kind == "converged"
    assert stream.ending.iterations == memory.ending.iterations <= 15
    torch.testing.assert_close(weights(stream), weights(memory), rtol=1e-10, atol=1e-11)
