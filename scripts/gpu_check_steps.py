"""The measuring steps of scripts/gpu_check.py, each run there as a child process
(``gpu_check.py --out DIR --child NAME``) that writes DIR/results/NAME.json, and the summary
table built from those files. Training runs are whole ``python -m logreg_torch train``
processes: the figures are what a user's command costs."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
TARGETS = {"metrics": 1e-4, "evaluate": 0.3, "logging": 0.5, "samples_per_s": 1e7}


def _save(out: Path, name: str, figures: dict) -> None:
    path = out / "results" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(figures, indent=2, default=str))
    os.replace(tmp, path)  # a step cut mid-write leaves the previous complete file


def train_process(out: Path, name: str, config: Path, overrides: list[str]) -> dict:
    """One ``logreg-torch train --timings`` process: exit code, whole-process seconds, seconds
    by stage, and the final history entry (read back from last.pt)."""
    run_dir = out / "runs" / name
    command = [sys.executable, "-m", "logreg_torch", "train", str(config), "--quiet",
               "--timings", f"log.run_dir={run_dir}", *overrides]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - started
    (out / "logs" / f"{name}.err").write_text(done.stderr)
    record = {"name": name, "command": command, "returncode": done.returncode,
              "seconds": seconds, "timings": _timings(done.stderr), "last": {}}
    if done.returncode == 0 and (run_dir / "last.pt").exists():
        import torch

        state = torch.load(run_dir / "last.pt", map_location="cpu", weights_only=True)
        record["last"] = state["history"][-1] if state["history"] else {}
    return record


def _timings(stderr: str) -> dict:
    for line in reversed(stderr.splitlines()):
        if line.startswith('{"timings"'):
            return json.loads(line)["timings"]
    return {}


def _median(records: list[dict], key: str) -> float | None:
    values = [r["timings"][key] if key in r["timings"] else r.get(key) for r in records]
    values = [v for v in values if isinstance(v, int | float)]
    return statistics.median(values) if values else None


# ----------------------------------------------------------------------------- the children


def env(out: Path, overrides: tuple[str, ...], rounds: int) -> int:
    import torch

    facts = {"python": sys.version.split()[0], "platform": platform.platform(),
             "cpu_cores": os.cpu_count(), "torch": torch.__version__,
             "torch_cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
             "cuda_available": torch.cuda.is_available(), "gpus": []}
    try:
        import triton

        facts["triton"] = triton.__version__
    except ImportError:
        facts["triton"] = None
    for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
        p = torch.cuda.get_device_properties(i)
        facts["gpus"].append({"name": p.name, "memory_gib": round(p.total_memory / 2**30, 1),
                              "capability": f"{p.major}.{p.minor}"})
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                         text=True)
    facts["commit"] = git.stdout.strip() or None
    _save(out, "env", facts)
    print(json.dumps(facts, indent=2))
    return 0


def default(out: Path, overrides: tuple[str, ...], rounds: int) -> int:
    """configs/default.yaml on the GPU (train.device auto) and on the CPU, interleaved."""
    runs: dict[str, list[dict]] = {"gpu": [], "cpu": []}
    for i in range(rounds):
        for device in ("cpu", "gpu"):
            extra = ["train.device=cpu"] if device == "cpu" else []
            runs[device].append(train_process(out, f"default-{device}-{i}",
                                              CONFIGS / "default.yaml", [*extra, *overrides]))
            _save(out, "default", compare_default(runs))
    figures = compare_default(runs)
    print(json.dumps({k: v for k, v in figures.items() if k != "runs"}, indent=2))
    return 0 if figures["exit_codes_ok"] else 1


def compare_default(runs: dict[str, list[dict]]) -> dict:
    """Figures of the interleaved default.yaml runs: medians by stage and of the whole process,
    and the largest difference between the final metrics of the GPU and CPU runs."""
    figures: dict = {"runs": runs, "exit_codes_ok": all(r["returncode"] == 0 for rs in
                                                        runs.values() for r in rs)}
    for device, records in runs.items():
        figures[device] = {key: _median(records, key) for key in
                           ("seconds", "imports", "data", "setup", "train", "evaluate",
                            "logging")}
    gpu, cpu = (next((r["last"] for r in runs[d] if r["last"]), {}) for d in ("gpu", "cpu"))
    shared = [k for k in gpu if k in cpu and (k.startswith("val/") or k == "train/loss")]
    figures["metric_diffs"] = {k: abs(gpu[k] - cpu[k]) for k in shared}
    figures["max_metric_diff"] = max(figures["metric_diffs"].values(), default=None)
    return figures


def cuda_yaml(out: Path, overrides: tuple[str, ...], rounds: int) -> int:
    """Train-stage samples/s of configs/cuda.yaml (10 epochs), and the steady rate from a 10-
    and a 20-epoch run (one-off costs cancel); eager, then with train.cuda_graphs=true where
    the config has it."""
    from logreg_torch.config import ConfigError, load_config
    from logreg_torch.data import split_indices

    cfg = load_config(CONFIGS / "cuda.yaml", list(overrides))
    d = cfg.data
    n_train = len(split_indices(d.n_samples, d.val_fraction, d.test_fraction, cfg.train.seed)[0])
    figures: dict = {"n_train": n_train}
    for variant, extra in (("eager", []), ("graphs", ["train.cuda_graphs=true"])):
        try:
            load_config(CONFIGS / "cuda.yaml", [*extra, *overrides])
        except ConfigError as e:
            figures[variant] = {"status": f"not available ({e})"}
            continue
        records = {}
        for epochs in (10, 20):
            records[epochs] = train_process(out, f"cuda-{variant}-{epochs}",
                                            CONFIGS / "cuda.yaml",
                                            [*extra, *overrides, f"train.epochs={epochs}"])
        figures[variant] = _rates(records, n_train)
        _save(out, "cuda.yaml", figures)
    print(json.dumps(figures, indent=2))
    ok = all(v.get("exit_codes_ok", True) for v in figures.values() if isinstance(v, dict))
    return 0 if ok else 1


def _rates(records: dict[int, dict], n_train: int) -> dict:
    ten, twenty = records[10], records[20]
    figures = {"exit_codes_ok": ten["returncode"] == twenty["returncode"] == 0,
               "timings_10_epochs": ten["timings"], "seconds_10_epochs": ten["seconds"],
               "train_loss_10_epochs": ten["last"].get("train/loss")}
    train10, train20 = ten["timings"].get("train"), twenty["timings"].get("train")
    if train10:
        figures["train_samples_per_s"] = 10 * n_train / train10
    if train10 and train20 and train20 > train10:
        figures["steady_samples_per_s"] = 10 * n_train / (train20 - train10)
    return figures


def lbfgs_1e6(out: Path, overrides: tuple[str, ...], rounds: int) -> int:
    record = train_process(out, "lbfgs-1e6", CONFIGS / "lbfgs.yaml", [
        "data.source=synthetic", "data.n_samples=1000000", "data.n_features=100",
        "log.histogram_every=0", *overrides])
    _save(out, "lbfgs-1e6", record)
    print(json.dumps(record["timings"]))
    return record["returncode"]


PROFILE = """
import cProfile, pstats, sys
from logreg_torch.cli import main
profiler = cProfile.Profile()
code = profiler.runcall(main, sys.argv[2:])
profiler.dump_stats(sys.argv[1])
with open(sys.argv[1][:-5] + ".txt", "w") as f:
    for key, rows in (("cumulative", 70), ("tottime", 40)):
        pstats.Stats(sys.argv[1], stream=f).sort_stats(key).print_stats(rows)
sys.exit(code)
"""
RUN = "import sys; from logreg_torch.cli import main; sys.exit(main(sys.argv[1:]))"
TORCH_PROFILE = """
import sys
import torch
from torch.profiler import ProfilerActivity, profile
from logreg_torch.config import load_config
from logreg_torch.fit import fit
cfg = load_config(sys.argv[2], sys.argv[3:])
with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
    fit(cfg)
    torch.cuda.synchronize()
with open(sys.argv[1], "w") as f:
    for key in ("self_cpu_time_total", "self_cuda_time_total"):
        f.write(prof.key_averages().table(sort_by=key, row_limit=40) + "\\n")
"""


def profile(out: Path, overrides: tuple[str, ...], rounds: int) -> int:
    """Where the seconds of default.yaml go (cProfile, import times) on each device, and the
    kernels and host ops of two epochs of cuda.yaml (torch.profiler)."""
    folder = out / "profile"
    folder.mkdir(exist_ok=True)
    codes = {}
    for device in ("gpu", "cpu"):
        argv = ["train", str(CONFIGS / "default.yaml"), "--quiet", "--timings",
                f"log.run_dir={out / 'runs' / f'profile-{device}'}", *overrides,
                *(["train.device=cpu"] if device == "cpu" else [])]
        codes[f"cprofile-{device}"] = _run(
            [sys.executable, "-c", PROFILE, str(folder / f"default-{device}.prof"), *argv],
            folder / f"default-{device}.log")
        codes[f"importtime-{device}"] = _run(
            [sys.executable, "-X", "importtime", "-c", RUN, *argv],
            folder / f"importtime-{device}.log")
        _top_imports(folder / f"importtime-{device}.log", folder / f"imports-{device}.txt")
    codes["torch-profiler"] = _run(
        [sys.executable, "-c", TORCH_PROFILE, str(folder / "cuda-yaml-torch-profiler.txt"),
         str(CONFIGS / "cuda.yaml"), "train.epochs=2", "log.histogram_every=0",
         f"log.run_dir={out / 'runs' / 'profile-cuda-yaml'}", *overrides],
        folder / "cuda-yaml-torch-profiler.log")
    _save(out, "profile", {"returncodes": codes, "files": sorted(p.name for p in
                                                                 folder.iterdir())})
    return 0 if not any(codes.values()) else 1


def _run(command: list[str], log: Path) -> int:
    with open(log, "w") as f:
        return subprocess.run(command, cwd=REPO, stdout=f, stderr=subprocess.STDOUT,
                              timeout=300).returncode


def _top_imports(log: Path, into: Path, rows: int = 40) -> None:
    """The slowest imports of a ``-X importtime`` log, by cumulative microseconds."""
    found = []
    for line in log.read_text(errors="replace").splitlines():
        parts = line.split("|")
        if line.startswith("import time:") and len(parts) == 3 and parts[1].strip().isdigit():
            found.append((int(parts[1]), parts[2].rstrip()))
    found.sort(reverse=True)
    into.write_text("".join(f"{us / 1e6:8.3f} s  {name}\n" for us, name in found[:rows]))


CHILDREN = {"env": env, "default": default, "cuda.yaml": cuda_yaml, "profile": profile,
            "lbfgs-1e6": lbfgs_1e6}


# ----------------------------------------------------------------------------- the summary


def test_counts(out: Path, name: str) -> dict:
    """Outcomes of a pytest step from its JUnit XML, or from its -v log when it was cut."""
    xml = out / "results" / f"{name}.xml"
    if xml.exists():
        root = ET.parse(xml).getroot()
        suite = root if root.tag == "testsuite" else root.find("testsuite")
        failed = [f"{case.get('classname')}::{case.get('name')}" for case in suite.iter("testcase")
                  if case.find("failure") is not None or case.find("error") is not None]
        return {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")
                } | {"failed": failed[:40]}
    log = out / "logs" / f"{name}.out"
    text = log.read_text(errors="replace") if log.exists() else ""
    words = [line.split() for line in text.splitlines()]
    outcome = {k: sum(k in w for w in words) for k in ("PASSED", "FAILED", "ERROR", "SKIPPED")}
    return {"from_log": True, **outcome,
            "failed": [w[-1] for w in words if "FAILED" in w or "ERROR" in w][:40]}


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else (f"{value:.3g}" if abs(value) >= 1e4 or abs(value) < 1e-3
                                      else f"{value:.{digits}f}")


def targets(out: Path, rows: list[dict]) -> list[tuple[str, str, str]]:
    """(target, figure, verdict) for each of issue 20's targets that the results measure."""
    by = {r["name"]: r for r in rows}
    found: list[tuple[str, str, str]] = []

    def verdict(ok: bool | None) -> str:
        return "not measured" if ok is None else ("met" if ok else "NOT met")

    d = by.get("default", {}).get("figures") or {}
    if d:
        gpu, cpu = d.get("gpu", {}), d.get("cpu", {})
        found.append(("default.yaml on the GPU exits 0", str(d.get("exit_codes_ok")),
                      verdict(d.get("exit_codes_ok"))))
        diff = d.get("max_metric_diff")
        found.append(("same metrics as the CPU to 1e-4", f"max |diff| {_fmt(diff, 6)}",
                      verdict(None if diff is None else diff <= TARGETS["metrics"])))
        g, c = gpu.get("seconds"), cpu.get("seconds")
        found.append(("whole process: GPU no slower than train.device=cpu",
                      f"{_fmt(g)} s vs {_fmt(c)} s", verdict(None if None in (g, c) else g <= c)))
        for stage in ("evaluate", "logging"):
            for device, fig in (("GPU", gpu), ("CPU", cpu)):
                v = fig.get(stage)
                found.append((f"{stage} stage <= {TARGETS[stage]} s ({device})", f"{_fmt(v)} s",
                              verdict(None if v is None else v <= TARGETS[stage])))
    c = by.get("cuda.yaml", {}).get("figures") or {}
    for variant in ("eager", "graphs"):
        rate = (c.get(variant) or {}).get("train_samples_per_s")
        steady = (c.get(variant) or {}).get("steady_samples_per_s")
        if variant in c:
            found.append((f"cuda.yaml train stage >= 1e7 samples/s ({variant})",
                          f"{_fmt(rate)} (steady {_fmt(steady)})",
                          verdict(None if rate is None else rate >= TARGETS["samples_per_s"])))
    for name in ("cuda-tests", "suite"):
        if by.get(name, {}).get("status") in ("ok", "failed", "cut"):
            n = test_counts(out, name)
            bad = n.get("failures", n.get("FAILED", 0)) + n.get("errors", n.get("ERROR", 0))
            cut = " (cut: counted from the log)" if n.get("from_log") else ""
            found.append((f"{name}: 0 failures", f"{bad} failed or errors{cut}",
                          verdict(None if cut else bad == 0)))
    return found


def summarize(out: Path, rows: list[dict]) -> str:
    lines = ["# gpu_check", "", "| step | status | seconds | note |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['status']} | {r['seconds']:.1f} | "
                     f"{r['note'].replace('|', '/')} |")
    lines += ["", "| issue 20 target | measured | verdict |", "|---|---|---|"]
    lines += [f"| {t} | {f} | {v} |" for t, f, v in targets(out, rows)]
    for name in ("cuda-tests", "suite"):
        failed = test_counts(out, name).get("failed") if (out / "logs" / f"{name}.out"
                                                          ).exists() else None
        if failed:
            lines += ["", f"{name} failures (tracebacks: logs/{name}-failures.txt):",
                      *[f"- {f}" for f in failed]]
    return "\n".join(lines) + "\n"
