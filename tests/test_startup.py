"""Start-up cost: what each entry point imports, checked in a fresh interpreter.

``torch._dynamo`` (about 1 s with sympy) belongs only to runs that compile, ``torchmetrics``
(about 1-2.5 s with scipy and matplotlib) to no run (the metrics are our own), ``triton`` only
to runs with CUDA tensors (the loss's GPU kernels). A module-level import of any of them, anywhere
on these paths, fails here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch._dynamo", "torchmetrics", "sympy", "scipy", "triton")

# Runs `code` (which may call the CLI's main), then prints which HEAVY modules got imported.
_HARNESS = """
import json, sys
{code}
print(json.dumps([m for m in {heavy!r} if m in sys.modules]))
"""


def _heavy_imports(code: str, cwd: Path = REPO) -> list[str]:
    script = _HARNESS.format(code=code, heavy=HEAVY)
    out = subprocess.run([sys.executable, "-c", script], cwd=cwd, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def _cli(*argv: str) -> str:
    return (f"from logreg_torch.cli import main\n"
            f"rc = main({list(argv)!r})\nassert rc == 0, rc")


def test_import_package_loads_neither_torch_nor_heavy_modules() -> None:
    assert _heavy_imports("import logreg_torch\nassert 'torch' not in sys.modules") == []


def test_help_and_config_commands_load_neither_torch_nor_heavy_modules() -> None:
    help_code = ("from logreg_torch.cli import main\ntry:\n    main(['--help'])\n"
                 "except SystemExit as e:\n    assert e.code == 0\n")
    config = _cli("config", "configs/default.yaml", "optim.lr=0.1")
    for code in (help_code, config):
        assert _heavy_imports(code + "\nassert 'torch' not in sys.modules") == []


def test_losses_import_no_dynamo() -> None:
    """The losses are what users import into their own networks."""
    assert _heavy_imports("from logreg_torch import BCELoss, binary_cross_entropy") == []


def test_cpu_losses_and_fused_epoch_never_import_triton() -> None:
    """The GPU kernels load with the first CUDA tensor; CPU work, every path, never."""
    code = """
import torch
from logreg_torch import BCELoss, binary_cross_entropy_with_logits
from logreg_torch.fast import linear_bce_with_logits
x = torch.randn(300, requires_grad=True)
for reduction in ("mean", "sum", "none"):
    binary_cross_entropy_with_logits(x, torch.rand(300), reduction=reduction).sum().backward()
    BCELoss(reduction=reduction)(torch.sigmoid(x), torch.rand(300)).sum().backward()
binary_cross_entropy_with_logits(x.bfloat16(), torch.rand(300).bfloat16()).backward()
head = torch.nn.Linear(4, 1)
linear_bce_with_logits(torch.randn(50000, 4), head, torch.rand(50000)).backward()
"""
    assert _heavy_imports(code) == []


@pytest.mark.parametrize("optim", ["lbfgs", "adam"])
def test_training_without_metrics_or_compile_loads_no_heavy_module(tmp_path, optim) -> None:
    """A run with no held-out split computes no metrics; and nothing compiles. (Adam's and
    SGD's ``step`` would import torch._dynamo themselves, ~1 s of a 20-epoch run: see
    logreg_torch/torch_compat.py.)"""
    batch = "null" if optim == "lbfgs" else "64"
    code = _cli("train", str(REPO / "configs" / "default.yaml"), "--quiet", "train.epochs=2",
                f"optim.name={optim}", f"train.batch_size={batch}", "data.val_fraction=0",
                # tol below float32's floor: the float64 Newton finish runs too (on blocks of
                # over 64K rows its double backward made torch.autograd import sympy, 0.7 s,
                # until the loss's backward stopped passing a gradient tensor)
                "optim.tol=1e-10" if optim == "lbfgs" else "optim.lr=0.05",
                "data.test_fraction=0", f"log.run_dir={tmp_path / 'run'}",
                "train.device=cpu")  # what a CPU run imports, on every machine
    assert _heavy_imports(code, cwd=tmp_path) == []
    assert (tmp_path / "run" / "last.pt").is_file()


def test_training_with_metrics_and_figures_loads_no_heavy_module(tmp_path) -> None:
    """A run that scores a validation and a test split every epoch and draws its figures
    imports neither torchmetrics (nor its scipy) nor torch._dynamo."""
    code = _cli("train", str(REPO / "configs" / "default.yaml"), "--quiet", "train.epochs=2",
                "data.test_fraction=0.2", f"log.run_dir={tmp_path / 'run'}", "train.device=cpu")
    assert _heavy_imports(code, cwd=tmp_path) == []
    assert (tmp_path / "run" / "best.pt").is_file()


def test_deferred_dynamo_is_exact_once_dynamo_is_loaded() -> None:
    """After ``torch._dynamo`` is imported, the optimizers' methods go through
    ``torch._dynamo.disable`` as torch wires them, and still work."""
    code = """
import torch
from logreg_torch.torch_compat import _torch_disabled_methods, defer_dynamo_import
defer_dynamo_import()
p = torch.nn.Parameter(torch.ones(3))
opt = torch.optim.LBFGS([p])  # add_param_group, without dynamo
assert 'torch._dynamo' not in sys.modules
import torch._dynamo
opt.zero_grad()
state = opt.state_dict()
fns = _torch_disabled_methods(torch.optim.Optimizer)
assert len(fns) >= 4, fns
for fn in fns:
    if fn.__name__ in ('zero_grad', 'state_dict'):
        hook = getattr(fn, '__dynamo_disable')
        assert hasattr(hook, '_torchdynamo_disable'), (fn, hook)
assert state['param_groups'][0]['params'] == [0]
"""
    assert "torch._dynamo" in _heavy_imports(code)


def test_lazy_step_is_exact_and_keeps_hooks() -> None:
    """Adam's, AdamW's and SGD's ``step`` without ``torch._dynamo`` give the weights torch's own
    ``step`` gives once dynamo is loaded, bit for bit, and still call the step hooks."""
    code = """
import torch
from logreg_torch.torch_compat import defer_dynamo_import
defer_dynamo_import()

def run(make):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    opt, calls = make(model.parameters()), []
    opt.register_step_post_hook(lambda *a: calls.append(1))
    X = torch.randn(32, 5)
    for _ in range(5):
        opt.zero_grad()
        model(X).square().mean().backward()
        opt.step()
    assert len(calls) == 5 and torch.is_grad_enabled()
    return [p.detach().clone() for p in model.parameters()]

makers = [lambda p: torch.optim.Adam(p, lr=0.1), lambda p: torch.optim.AdamW(p, lr=0.1),
          lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9)]
lazy = [run(m) for m in makers]
assert 'torch._dynamo' not in sys.modules
import torch._dynamo
for make, ours in zip(makers, lazy):
    assert all(torch.equal(a, b) for a, b in zip(ours, run(make)))
"""
    assert "torch._dynamo" in _heavy_imports(code)


def test_train_command_reports_its_stages_and_exits_with_everything_written(tmp_path) -> None:
    """``python -m logreg_torch train --timings``: one JSON line of seconds by stage on stderr;
    the command exits without interpreter teardown (cli.run), after every file is complete."""
    run_dir = tmp_path / "run"
    out = subprocess.run(
        [sys.executable, "-m", "logreg_torch", "train", str(REPO / "configs" / "default.yaml"),
         "--quiet", "--timings", "train.epochs=2", "log.histogram_every=0",
         f"log.run_dir={run_dir}", "train.device=cpu"],  # a GPU's start is not the point
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    line = json.loads(out.stderr.strip().splitlines()[-1])
    timings, parts = line["timings"], line["parts"]
    assert list(timings) == ["imports", "data", "setup", "train", "evaluate", "logging"]
    assert all(v >= 0 for v in timings.values()) and timings["train"] > 0
    # The finer entries: each stage's parts add up to it (to the printed rounding), and the
    # named parts, not "other", account for it.
    assert list(parts) == ["imports", "evaluate", "logging"]
    assert list(parts["imports"]) == ["torch", "logreg_torch.fit", "torch.utils.tensorboard"]
    assert list(parts["evaluate"]) == ["predict", "metrics", "other"]
    assert list(parts["logging"]) == ["run_folder", "events", "figures", "checkpoints", "other"]
    for stage, named in parts.items():
        assert sum(named.values()) == pytest.approx(timings[stage], abs=1e-3 * len(named))
        assert all(v >= 0 for k, v in named.items() if k != "other"), named
        assert abs(named.get("other", 0.0)) <= 0.25 * timings[stage] + 0.01, (stage, named)
    assert parts["logging"]["figures"] > 0 and parts["logging"]["checkpoints"] > 0
    import torch

    state = torch.load(run_dir / "last.pt", weights_only=True)
    assert state["epoch"] == 2
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir)).Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2]
    bad = subprocess.run([sys.executable, "-m", "logreg_torch", "train", "nope.yaml"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ")


@pytest.mark.parametrize(("given", "expected"), [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_cli_makes_openmp_threads_sleep_unless_told_otherwise(given, expected) -> None:
    """Set before torch loads (OpenMP reads it once); a user's own setting wins."""
    import os

    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given:
        env["OMP_WAIT_POLICY"] = given
    code = (_cli("config", "configs/default.yaml") +
            "\nimport os\nprint('policy', os.environ.get('OMP_WAIT_POLICY'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == f"policy {expected}"
