"""Check and measure an install on a machine with a GPU, in one command, in at most 8 minutes:

    PYTHONPATH=. python3 scripts/gpu_check.py --out DIR      # the project needs no install
    python scripts/gpu_check.py --out DIR --dry-run          # the plan only: steps, commands

Each step is one command with its own time budget, run in order under one deadline
(``--budget``, 470 s): a step that would start too late is reported as skipped, a step that
outlives its budget is stopped (its process group) and reported as cut, and a benchmark script
or option that is not there is reported as not available. Everything goes to DIR as it
happens (logs/<step>.out and .err, results/<step>.json, summary.json, summary.md), so a run
cut short still leaves what it did. The steps:

- env: Python, torch, CUDA, Triton, the GPUs, the CPU cores, the commit;
- default: ``logreg-torch train configs/default.yaml --timings`` as whole processes, on the GPU
  (``train.device`` auto) and with ``train.device=cpu``, interleaved: exit codes, seconds by
  stage, whole-process seconds, and the final validation metrics of the two compared;
- cuda.yaml: ``configs/cuda.yaml --timings``: train-stage samples/s, and the steady rate from
  the difference of a 10- and a 20-epoch run; the same with ``train.cuda_graphs=true``;
- cuda-tests, suite: the CUDA-marked tests, then every other test (pytest-xdist over the CPU
  cores, pytest-timeout per test when installed, JUnit XML, a line per test in the log);
- profile: where the seconds of ``train configs/default.yaml`` go on the GPU and on the CPU
  (cProfile, ``python -X importtime``) and torch.profiler over two epochs of cuda.yaml;
- lbfgs-1e6: ``configs/lbfgs.yaml`` on 1e6 x 100 synthetic rows, ``--timings``, on the GPU;
- bench-losses, bench-training: the GPU rows of ``scripts/bench_losses.py --device cuda`` and
  ``scripts/benchmark.py --device cuda --quick``.

The summary table at the end puts each figure beside issue 20's target.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
from gpu_check_steps import CHILDREN, summarize  # noqa: E402

BUDGET = 470.0  # seconds for all steps: the check must end within 8 minutes
MIN_START = 15.0  # a step starts only with at least this many seconds (or its budget) left
NOT_AVAILABLE = ("unrecognized arguments", "invalid choice", "No such file or directory",
                 "can't open file")


@dataclass
class Step:
    name: str
    command: list[str]
    budget: float  # seconds
    needs_cuda: bool = True
    what: str = ""


@dataclass
class Result:
    name: str
    status: str  # ok, failed, cut, skipped, not available
    seconds: float = 0.0
    returncode: int | None = None
    note: str = ""
    figures: dict = field(default_factory=dict)


def child(name: str, out: Path, *args: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--out", str(out), "--child", name,
            *args]


def plan(out: Path, workers: int, overrides: tuple[str, ...] = (), rounds: int = 2
         ) -> list[Step]:
    """The steps in the order they run. ``overrides`` go to every training run (tests pass
    ``train.epochs=1``); ``rounds``: default.yaml runs on each device."""
    extra = [f"--override={o}" for o in overrides] + [f"--rounds={rounds}"]
    return [
        Step("env", child("env", out), 30, needs_cuda=False, what="versions, GPUs, cores"),
        Step("default", child("default", out, *extra), 60,
             what="default.yaml: GPU vs train.device=cpu"),
        Step("cuda.yaml", child("cuda.yaml", out, *extra), 70,
             what="cuda.yaml: train samples/s, eager and CUDA graphs"),
        Step("cuda-tests", pytest_command(out, "cuda-tests", "cuda", min(workers, 4)), 100,
             what="the CUDA-marked tests"),
        Step("suite", pytest_command(out, "suite", "not cuda", workers), 240, needs_cuda=False,
             what="every other test"),
        Step("profile", child("profile", out, *extra), 45, what="cProfile, importtime, "
             "torch.profiler"),
        Step("lbfgs-1e6", child("lbfgs-1e6", out, *extra), 30,
             what="lbfgs.yaml on 1e6 x 100 rows"),
        Step("bench-losses", [sys.executable, str(REPO / "scripts" / "bench_losses.py"),
                              "--device", "cuda"], 40, what="the losses' GPU rows"),
        Step("bench-training", [sys.executable, str(REPO / "scripts" / "benchmark.py"),
                                "--device", "cuda", "--quick"], 40,
             what="the training benchmark's GPU rows"),
    ]


def pytest_command(out: Path, name: str, marker: str, workers: int) -> list[str]:
    import importlib.util

    command = [sys.executable, "-m", "pytest", "-v", "-rfEs", "-m", marker, "-p", "no:benchmark",
               "-p", "no:cacheprovider", f"--junitxml={out / 'results' / (name + '.xml')}",
               "--durations=25", "-p", "pytest_failures",
               f"--failures-file={out / 'logs' / (name + '-failures.txt')}"]
    if importlib.util.find_spec("xdist") is not None and workers > 1:
        command += ["-n", str(workers), "--dist", "loadfile"]
    if importlib.util.find_spec("pytest_timeout") is not None:
        command += ["--timeout=150"]
    return command


def child_env() -> dict[str, str]:
    """The environment of every step: the repository first on an absolute PYTHONPATH (tests
    start ``python -m logreg_torch`` from temporary folders, where a relative "." would not
    find it)."""
    # scripts/ too: pytest loads its failure-report plugin (pytest_failures.py) from there
    paths = [str(REPO), str(REPO / "scripts")] + [str(Path(p).resolve()) for p in
                           os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(dict.fromkeys(paths)),
            "PYTHONUNBUFFERED": "1"}


def run_step(step: Step, out: Path, deadline: float, have_cuda: bool) -> Result:
    """Run one step under its budget and the global deadline; its output goes to logs/.
    Without ``have_cuda`` the steps that need a GPU are skipped."""
    left = deadline - time.monotonic()
    if step.needs_cuda and not have_cuda:
        return Result(step.name, "skipped", note="no CUDA device")
    if left < min(step.budget, MIN_START):
        return Result(step.name, "skipped", note=f"deadline: {left:.0f} s left")
    script = next((Path(a) for a in step.command[1:2] if a.endswith(".py")), None)
    if script is not None and not script.exists():
        return Result(step.name, "not available", note=f"{script.relative_to(REPO)} missing")
    timeout = min(step.budget, left)
    logs = out / "logs"
    started = time.monotonic()
    with open(logs / f"{step.name}.out", "w") as stdout, open(logs / f"{step.name}.err",
                                                              "w") as stderr:
        proc = subprocess.Popen(step.command, cwd=REPO, env=child_env(), stdout=stdout,
                                stderr=stderr, start_new_session=True)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _stop(proc)
            return Result(step.name, "cut", time.monotonic() - started, None,
                          f"stopped after its budget of {timeout:.0f} s")
    seconds = time.monotonic() - started
    if code == 0:
        return Result(step.name, "ok", seconds, code)
    err = (logs / f"{step.name}.err").read_text(errors="replace")
    if code == 2 and any(text in err for text in NOT_AVAILABLE):
        return Result(step.name, "not available", seconds, code, _last_line(err))
    return Result(step.name, "failed", seconds, code, _last_line(err))


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the step's whole process group (pytest workers, training processes), then
    SIGKILL to what is left after 5 s."""
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def check(out: Path, steps: list[Step], budget: float, have_cuda: bool) -> list[Result]:
    """Run ``steps`` in order under one deadline; summary.json and summary.md are rewritten
    after every step."""
    for sub in ("logs", "results", "runs"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + budget
    results: list[Result] = []
    for step in steps:
        print(f"[gpu_check] {step.name}: {step.what} (budget {step.budget:.0f} s)", flush=True)
        result = run_step(step, out, deadline, have_cuda)
        result.figures = _figures(out, step.name)
        results.append(result)
        print(f"[gpu_check] {step.name}: {result.status} {result.seconds:.1f} s {result.note}",
              flush=True)
        write_summary(out, results, steps)
    return results


def _figures(out: Path, name: str) -> dict:
    path = out / "results" / f"{name}.json"
    try:
        return json.loads(path.read_text()) if path.exists() else {}
    except json.JSONDecodeError:
        return {}


def write_summary(out: Path, results: list[Result], steps: list[Step]) -> None:
    done = {r.name for r in results}
    pending = [Result(s.name, "pending") for s in steps if s.name not in done]
    rows = [asdict(r) for r in results + pending]
    (out / "summary.json").write_text(json.dumps(rows, indent=2))
    (out / "summary.md").write_text(summarize(out, rows))


def has_cuda() -> bool:
    """Asked in a child process: this one never imports torch."""
    code = "import torch; print(torch.cuda.is_available())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=child_env(), timeout=120)
    return done.stdout.strip().endswith("True")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="folder for every output")
    parser.add_argument("--budget", type=float, default=BUDGET, help="seconds for all steps")
    parser.add_argument("--only", help="comma-separated step names to run (default: all)")
    parser.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1),
                        help="pytest-xdist workers for the suite")
    parser.add_argument("--dry-run", action="store_true", help="print the plan, run nothing")
    parser.add_argument("--override", action="append", default=[],
                        help="key=value for every training run (e.g. train.epochs=1)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="default.yaml runs on each device, interleaved")
    parser.add_argument("--allow-cpu", action="store_true",
                        help="run the GPU steps without a GPU too (their runs are then CPU "
                             "runs): to try this script itself")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    out = args.out.resolve()
    if args.child:
        return CHILDREN[args.child](out, tuple(args.override), args.rounds)
    steps = plan(out, args.workers, tuple(args.override), args.rounds)
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - {s.name for s in steps}
        if unknown:
            parser.error(f"unknown step(s) {sorted(unknown)}; steps: "
                         f"{', '.join(s.name for s in steps)}")
        steps = [s for s in steps if s.name in wanted]
    if args.dry_run:
        for s in steps:
            print(f"{s.name:15} {s.budget:4.0f} s  {'GPU' if s.needs_cuda else 'any'}  "
                  f"{' '.join(s.command)}")
        print(f"deadline: {args.budget:.0f} s for all steps")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    results = check(out, steps, args.budget, args.allow_cpu or has_cuda())
    print((out / "summary.md").read_text())
    return 0 if all(r.status in ("ok", "not available") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
