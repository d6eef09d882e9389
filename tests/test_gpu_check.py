"""scripts/gpu_check.py, on a machine without a GPU: the runner (budgets, the deadline, cut
steps, steps not available), the summary against issue 20's targets, and the default.yaml
step's real command lines (``--allow-cpu``: its "GPU" runs are then CPU runs)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from script_modules import load

REPO = Path(__file__).resolve().parents[1]
gpu_check = load("gpu_check")
steps = load("gpu_check_steps")


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_dry_run_lists_the_plan_and_runs_nothing(tmp_path, capsys) -> None:
    assert gpu_check.main(["--out", str(tmp_path / "out"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    names = [line.split()[0] for line in out.splitlines()[:-1]]
    assert names == ["env", "default", "cuda.yaml", "cuda-tests", "suite", "profile",
                     "lbfgs-1e6", "bench-losses", "bench-training"]
    assert out.splitlines()[-1] == "deadline: 470 s for all steps"  # within 8 minutes
    assert "-m cuda " in out and "-m not cuda " in out and "--junitxml=" in out
    assert not (tmp_path / "out").exists()


def test_a_step_past_its_budget_is_cut_and_leaves_its_log(tmp_path) -> None:
    slow = gpu_check.Step("slow", python("print('started', flush=True)\n"
                                         "import time; time.sleep(60)"), 2, needs_cuda=False)
    (result,) = gpu_check.check(tmp_path, [slow], budget=60, have_cuda=False)
    assert result.status == "cut" and result.seconds < 20
    assert (tmp_path / "logs" / "slow.out").read_text() == "started\n"
    rows = json.loads((tmp_path / "summary.json").read_text())
    assert [(r["name"], r["status"]) for r in rows] == [("slow", "cut")]


def test_steps_left_at_the_deadline_are_skipped_not_started(tmp_path) -> None:
    marker = tmp_path / "started"
    first = gpu_check.Step("first", python("import time; time.sleep(3)"), 10, needs_cuda=False)
    late = gpu_check.Step("late", python(f"open({str(marker)!r}, 'w')"), 10, needs_cuda=False)
    gpu = gpu_check.Step("gpu", python(f"open({str(marker)!r}, 'w')"), 1)
    results = gpu_check.check(tmp_path, [first, late, gpu], budget=12, have_cuda=False)
    assert [r.status for r in results] == ["ok", "skipped", "skipped"]
    assert results[1].note.startswith("deadline") and results[2].note == "no CUDA device"
    assert not marker.exists()
    assert "| late | skipped |" in (tmp_path / "summary.md").read_text()


def test_a_missing_script_or_option_is_not_available(tmp_path) -> None:
    script = tmp_path / "bench.py"
    script.write_text("import argparse\nargparse.ArgumentParser().parse_args()\n")
    option = gpu_check.Step("option", [sys.executable, str(script), "--device", "cuda"], 30,
                            needs_cuda=False)
    missing = gpu_check.Step("missing", [sys.executable, str(REPO / "scripts" / "nope.py")], 30,
                             needs_cuda=False)
    failing = gpu_check.Step("failing", python("raise SystemExit('error: it broke')"), 30,
                             needs_cuda=False)
    results = gpu_check.check(tmp_path, [option, missing, failing], budget=60, have_cuda=False)
    assert [r.status for r in results] == ["not available", "not available", "failed"]
    assert "unrecognized arguments: --device cuda" in results[0].note
    assert results[1].note == "scripts/nope.py missing" and results[2].note == "error: it broke"


def test_the_steps_run_with_the_repository_on_an_absolute_pythonpath(monkeypatch) -> None:
    # Tests start `python -m logreg_torch` from temporary folders: PYTHONPATH=. would not do.
    monkeypatch.setenv("PYTHONPATH", ".")
    paths = gpu_check.child_env()["PYTHONPATH"].split(":")
    assert paths[0] == str(REPO) and all(Path(p).is_absolute() for p in paths)


JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest"
 errors="0" failures="1" skipped="2" tests="40"><testcase classname="tests.test_x" name="test_a">
<failure message="boom"/></testcase><testcase classname="tests.test_x" name="test_b"/>
</testsuite></testsuites>"""


def test_summary_puts_each_figure_beside_its_target(tmp_path) -> None:
    (tmp_path / "results").mkdir()
    (tmp_path / "logs").mkdir()
    (tmp_path / "results" / "suite.xml").write_text(JUNIT)
    (tmp_path / "logs" / "suite.out").write_text("")
    # cuda-tests cut: counted from its -v log
    (tmp_path / "logs" / "cuda-tests.out").write_text(
        "[gw0] PASSED tests/test_fit.py::test_a\n[gw1] FAILED tests/test_fit.py::test_b\n")
    default = {"exit_codes_ok": True, "max_metric_diff": 3e-5,
               "gpu": {"seconds": 6.0, "evaluate": 0.2, "logging": 0.7},
               "cpu": {"seconds": 5.0, "evaluate": 0.25, "logging": 0.4}}
    cuda = {"eager": {"train_samples_per_s": 4e6, "steady_samples_per_s": 9e6},
            "graphs": {"train_samples_per_s": 2e7}}
    rows = [{"name": "default", "status": "ok", "seconds": 30.0, "note": "", "figures": default},
            {"name": "cuda.yaml", "status": "ok", "seconds": 20.0, "note": "", "figures": cuda},
            {"name": "cuda-tests", "status": "cut", "seconds": 110.0, "note": "", "figures": {}},
            {"name": "suite", "status": "failed", "seconds": 200.0, "note": "", "figures": {}}]
    verdicts = {t: (f, v) for t, f, v in steps.targets(tmp_path, rows)}
    assert verdicts["same metrics as the CPU to 1e-4"][1] == "met"
    assert verdicts["whole process: GPU no slower than train.device=cpu"] == (
        "6.000 s vs 5.000 s", "NOT met")
    assert verdicts["logging stage <= 0.5 s (GPU)"][1] == "NOT met"
    assert verdicts["logging stage <= 0.5 s (CPU)"][1] == "met"
    assert verdicts["cuda.yaml train stage >= 1e7 samples/s (eager)"][1] == "NOT met"
    assert verdicts["cuda.yaml train stage >= 1e7 samples/s (graphs)"][1] == "met"
    assert verdicts["suite: 0 failures"] == ("1 failed or errors", "NOT met")
    assert verdicts["cuda-tests: 0 failures"][1] == "not measured"  # cut: the count is partial
    text = steps.summarize(tmp_path, rows)
    assert "- tests.test_x::test_a" in text and "- tests/test_fit.py::test_b" in text


@pytest.mark.slow
def test_the_default_step_runs_its_commands_and_compares_the_runs(tmp_path, monkeypatch) -> None:
    # One round of one epoch per device, the GPU hidden (on a GPU machine too: this is about
    # the script, not the device): both runs are CPU runs, so the metrics agree exactly.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert gpu_check.main(["--out", str(tmp_path), "--only", "default", "--allow-cpu",
                           "--rounds", "1", "--override", "train.epochs=1"]) == 0
    figures = json.loads((tmp_path / "results" / "default.json").read_text())
    assert figures["exit_codes_ok"] and figures["max_metric_diff"] == 0.0
    for device in ("gpu", "cpu"):
        assert figures[device]["seconds"] > figures[device]["train"] > 0
        (run,) = figures["runs"][device]
        assert run["last"]["epoch"] == 1 and "val/roc_auc" in run["last"]
    assert "train.device=cpu" in figures["runs"]["cpu"][0]["command"]
    assert "| default | ok |" in (tmp_path / "summary.md").read_text()


def test_the_readmes_command_runs_as_written(tmp_path) -> None:
    import os
    import shlex
    import subprocess

    section = (REPO / "README.md").read_text().split("\n## GPU\n", 1)[1].split("\n## ", 1)[0]
    line = section.split("```bash\n", 1)[1].split("```", 1)[0].strip()
    words = shlex.split(line, comments=True)
    assert words[:3] == ["PYTHONPATH=$PWD", "python3", "scripts/gpu_check.py"], words
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = tmp_path / words[-1]
    done = subprocess.run([sys.executable, *words[2:-1], str(out), "--dry-run"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "deadline: 470 s for all steps"


def test_a_failure_is_on_disk_before_the_suite_ends(tmp_path) -> None:
    # A suite cut by its budget never reaches pytest's summary: the plugin has written each
    # failure with its traceback by then (here pytest is killed while the second test sleeps).
    import subprocess
    import time

    started = tmp_path / "hanging"
    (tmp_path / "test_cut.py").write_text(
        "import pathlib, time\n\ndef test_fails():\n    assert 1 + 1 == 3, 'arithmetic'\n\n"
        f"def test_hangs():\n    pathlib.Path({str(started)!r}).touch()\n    time.sleep(600)\n")
    failures = tmp_path / "failures.txt"
    env = {**os.environ, "PYTHONPATH": str(REPO / "scripts")}
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "pytest_failures",
                             "-p", "no:cacheprovider", f"--failures-file={failures}",
                             str(tmp_path / "test_cut.py")], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not started.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert started.exists()
    finally:
        proc.kill()
        proc.wait()
    text = failures.read_text()
    assert "test_cut.py::test_fails (call)" in text and "arithmetic" in text
    assert "test_hangs" not in text
