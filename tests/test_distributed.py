"""Distributed training under torchrun: two CPU processes (gloo) against one process.

Each run here is a real ``torchrun --nproc_per_node=2 scripts/train.py ...`` in a subprocess,
so these are the code paths people use: rendezvous, sharding, DDP or the all-reduced full
batch, rank-0-only writes and resume (what a dead peer or a missing peer does to the job is
in test_distributed_faults.py). The references run in this process: ``fit`` for the full
batch, and for DDP minibatches a plain loop with torch's own loss and Adam over the global
batches the two ranks make together. Negative controls break the thing checked (no gradient
sync; a loss not all-reduced; validation on a shard) and show that the same check then fails.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from distributed_helpers import CONFIGS, MARKS, TRAIN, _env, _load, _torchrun
from tensorboard.backend.event_processing import event_accumulator as ea
from torch.utils.data import DistributedSampler

from logreg_torch.config import load_config
from logreg_torch.data import prepare
from logreg_torch.train import fit

pytestmark = MARKS


def _single(run_dir: Path, config: str, *overrides: str) -> Path:
    """The same run in one process, in this one."""
    fit(load_config(CONFIGS / config, [f"log.run_dir={run_dir}", *overrides]))
    return run_dir


def _events(run_dir: Path) -> list[Path]:
    return sorted(run_dir.glob("events.out.tfevents.*"))


# ----------------------------------------------------------------------------- runs shared
# Every torchrun launch costs ~10 s of imports on two cores, so the runs are shared.

# Every job here is on the CPU (gloo), on a GPU machine too: the references are CPU runs, and a
# GPU is one device where these jobs start two processes.
# sklearn_parity: breast cancer (569 rows: uneven shards of 285 and 284), full-batch L-BFGS.
LBFGS = ("sklearn_parity.yaml", "train.precision=fp64", "train.device=cpu")
# default: jackets, Adam, batches of 64, in float64 so that the reference can be held to
# 1e-10. val_fraction 0.199 leaves 801 training rows: shards of 401 and 400, so rank 1's
# shard is padded with one row, as DistributedSampler pads.
ADAM = ("default.yaml", "train.precision=fp64", "data.val_fraction=0.199", "train.device=cpu")
ADAM_EPOCHS = 5

# scripts/train.py, and then every rank saves the weights its optimizer holds, so that rank 1's
# can be compared too (only rank 0 writes checkpoints). With NO_GRAD_SYNC=1 DDP never
# all-reduces: each rank trains alone on its shard (the negative control of the DDP tests).
EACH_RANK = '''\
import os
import sys

import torch
import torch.nn.parallel

optimizers = []
adam_init = torch.optim.Adam.__init__


def init(self, *args, **kwargs):
    adam_init(self, *args, **kwargs)
    optimizers.append(self)


torch.optim.Adam.__init__ = init
if os.environ.get("NO_GRAD_SYNC") == "1":
    class NoSync(torch.nn.parallel.DistributedDataParallel):
        def forward(self, *args, **kwargs):
            with self.no_sync():  # backward leaves each rank its own gradient
                return super().forward(*args, **kwargs)

    torch.nn.parallel.DistributedDataParallel = NoSync

from logreg_torch.cli import main  # noqa: E402

code = main(["train", *sys.argv[1:]])
(opt,) = optimizers
weights = [p.detach() for group in opt.param_groups for p in group["params"]]
torch.save(weights, os.path.join(os.environ["RANK_WEIGHTS"], f"rank{os.environ['RANK']}.pt"))
sys.exit(code)
'''


def _each_rank(base: Path, run_dir: Path, *overrides: str, no_grad_sync: bool = False
               ) -> list[list[torch.Tensor]]:
    """A torchrun job of EACH_RANK; returns the final weights of rank 0 and rank 1."""
    script = base / "each_rank.py"
    script.write_text(EACH_RANK)
    config, *adam = ADAM
    _torchrun(script, config, f"log.run_dir={run_dir}", *adam, *overrides,
              env=_env(RANK_WEIGHTS=str(base), NO_GRAD_SYNC="1" if no_grad_sync else "0"))
    return [_load(base / f"rank{r}.pt") for r in (0, 1)]


@pytest.fixture(scope="module")
def lbfgs_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(two-process run folder, one-process run folder)."""
    base = tmp_path_factory.mktemp("lbfgs")
    config, *overrides = LBFGS
    _torchrun(TRAIN, config, f"log.run_dir={base / 'ddp'}", *overrides)
    return base / "ddp", _single(base / "single", config, *overrides)


@pytest.fixture(scope="module")
def lbfgs_alone_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """L-BFGS with no float64 Newton finish: (two-process run folder, one-process run folder).
    The finish builds its own objective, so it would walk a wrong distributed L-BFGS objective
    (a penalty added once per rank, say) back to the right optimum and hide it."""
    base = tmp_path_factory.mktemp("lbfgs_alone")
    config, *overrides = LBFGS
    overrides = [*overrides, "optim.fp64_finish=false"]
    _torchrun(TRAIN, config, f"log.run_dir={base / 'ddp'}", *overrides)
    return base / "ddp", _single(base / "single", config, *overrides)


@pytest.fixture(scope="module")
def newton_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Newton on the same uneven shards: (two-process run folder, one-process run folder)."""
    base = tmp_path_factory.mktemp("newton")
    config, *overrides = LBFGS
    overrides = [*overrides, "optim.name=newton", "optim.tol=1e-12"]
    _torchrun(TRAIN, config, f"log.run_dir={base / 'ddp'}", *overrides)
    return base / "ddp", _single(base / "single", config, *overrides)


@pytest.fixture(scope="module")
def adam_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, list]:
    """Two processes for 3 epochs, then resumed by two processes to 5 epochs in place, and two
    processes for 5 epochs without a stop. Returns (a copy of the folder after 3 epochs, the
    resumed folder, the uninterrupted folder, the final weights of each of its ranks)."""
    base = tmp_path_factory.mktemp("adam")
    config, *overrides = ADAM
    run_dir = base / "ddp"
    _torchrun(TRAIN, config, f"log.run_dir={run_dir}", *overrides, "train.epochs=3")
    after_3 = tmp_path_factory.mktemp("adam_3_epochs") / "ddp"
    shutil.copytree(run_dir, after_3)
    _torchrun(TRAIN, config, *overrides, f"train.resume={run_dir / 'last.pt'}",
              f"train.epochs={ADAM_EPOCHS}")
    whole = base / "uninterrupted"
    ranks = _each_rank(tmp_path_factory.mktemp("ranks"), whole, f"train.epochs={ADAM_EPOCHS}")
    return after_3, run_dir, whole, ranks


def ddp_reference(epochs: int) -> dict:
    """What two DDP ranks compute, in one process, from the README's description alone.

    Rank r holds rows r, r + 2, ... of the training split, padded as DistributedSampler pads
    (its indices are used here); every epoch both ranks shuffle their shard with the same
    per-epoch seed and take batches of 64 in that order; DDP averages the two ranks' mean-loss
    gradients, which (equal batch sizes) is the gradient of the mean loss over the union of the
    two batches. So one process steps Adam on that union: torch's own BCE-with-logits, torch's
    Adam, the model's zero start. Returns the weights, the per-epoch train loss (the mean over
    both shards, as all-reduced) and val loss, and what a broken run would report instead.
    """
    cfg = load_config(CONFIGS / ADAM[0], [*ADAM[1:], f"train.epochs={epochs}"])
    data = prepare(cfg.data, cfg.train.seed, dtype=torch.float64)
    X, y = data.train
    shards = [torch.tensor(list(DistributedSampler(range(len(X)), num_replicas=2, rank=r,
                                                   shuffle=False))) for r in (0, 1)]
    linear = torch.nn.Linear(X.shape[1], 1, dtype=torch.float64)
    torch.nn.init.zeros_(linear.weight)
    torch.nn.init.zeros_(linear.bias)
    adam = torch.optim.Adam(linear.parameters(), lr=cfg.optim.lr)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    out: dict = {"train/loss": [], "val/loss": [], "rank 0 train/loss": [], "steps": 0}
    for epoch in range(epochs):
        gen = torch.Generator().manual_seed(cfg.train.seed * 1_000_003 + epoch)
        perm = torch.randperm(len(shards[0]), generator=gen)
        sums = [0.0, 0.0]  # per rank: sum over its batches of (mean loss * rows)
        for batch in perm.split(cfg.train.batch_size):
            parts = [shard[batch] for shard in shards]
            with torch.no_grad():  # each rank's loss before the step, as it records it
                for r, part in enumerate(parts):
                    sums[r] += float(bce(linear(X[part]).squeeze(1), y[part])) * len(part)
            rows = torch.cat(parts)
            adam.zero_grad()
            bce(linear(X[rows]).squeeze(1), y[rows]).backward()
            adam.step()
            out["steps"] += 1
        out["train/loss"].append(sum(sums) / sum(len(s) for s in shards))
        out["rank 0 train/loss"].append(sums[0] / len(shards[0]))
        with torch.no_grad():
            Xv, yv = data.val
            out["val/loss"].append(float(bce(linear(Xv).squeeze(1), yv)))
            # what rank 0 would report if it validated on rows 0, 2, ... only
            out["rank 0 val/loss"] = float(bce(linear(Xv[0::2]).squeeze(1), yv[0::2]))
    out["model"] = {"linear.weight": linear.weight.detach(), "linear.bias": linear.bias.detach()}
    return out


@pytest.fixture(scope="module")
def reference() -> dict:
    return ddp_reference(ADAM_EPOCHS)


def weight_gap(weights: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> float:
    assert weights.keys() == reference.keys()
    return max(float((weights[k] - reference[k]).abs().max()) for k in reference)


# Both sides work in float64 and differ only in rounding: DDP averages two 64-row mean
# gradients through gloo where the reference takes one 128-row mean, and our loss kernel is
# not torch's. That is ~1e-16 relative per step; Adam's step lr*m/(sqrt(v)+eps) is smooth in
# the gradient (v stays far from 0 here), so over 35 steps of lr 0.05 the weights drift
# ~1e-14 apart (measured: 8e-17). 1e-10 leaves orders of margin; gradients that are
# not synced move them 0.26 (the negative control).
ATOL = 1e-10


# ----------------------------------------------------------------------------- same model


def test_full_batch_newton_matches_one_process(newton_runs: tuple[Path, Path]) -> None:
    # Value, gradient and Hessian all-reduced: the same Newton steps as one process.
    ddp, single = (_load(d / "last.pt") for d in newton_runs)
    assert ddp["ending"]["kind"] == single["ending"]["kind"] == "converged"
    assert ddp["ending"]["iterations"] == single["ending"]["iterations"]
    for name, weight in single["model"].items():
        torch.testing.assert_close(ddp["model"][name], weight, rtol=0, atol=1e-11, msg=name)


def test_full_batch_lbfgs_matches_one_process(lbfgs_runs: tuple[Path, Path]) -> None:
    # Loss and gradients are all-reduced over the shards, so L-BFGS walks the same path as
    # one process; only the summation order differs (float64 rounding, ~1e-13).
    ddp, single = (_load(d / "last.pt") for d in lbfgs_runs)
    assert ddp["model"].keys() == single["model"].keys()
    for name, weight in single["model"].items():
        assert weight.dtype == torch.float64
        torch.testing.assert_close(ddp["model"][name], weight, rtol=0, atol=1e-9, msg=name)
    assert ddp["history"][-1]["train/loss"] == pytest.approx(
        single["history"][-1]["train/loss"], rel=0, abs=1e-9)


def test_full_batch_lbfgs_without_the_finish_matches_one_process(lbfgs_alone_runs) -> None:
    # Both stop at the float64 floor (max|grad| ~2e-10 > tol 1e-10) a few iterations apart:
    # measured 2.4e-8 apart. With the penalty counted once per rank the two-process run
    # minimises another objective and ends 0.30 away.
    ddp, single = (_load(d / "last.pt") for d in lbfgs_alone_runs)
    for state in (ddp, single):
        assert state["ending"]["finish_from"] is None  # no float64 Newton step ran
        assert state["ending"]["grad_max"] < 1e-8
    for name, weight in single["model"].items():
        torch.testing.assert_close(ddp["model"][name], weight, rtol=0, atol=1e-6, msg=name)


def test_ddp_ranks_end_equal_to_one_process_on_the_global_batches(adam_runs, reference) -> None:
    *_, whole, (rank0, rank1) = adam_runs
    state = _load(whole / "last.pt")
    # Both ranks hold the same weights, bit for bit, and they are the ones rank 0 saved.
    assert all(torch.equal(a, b) for a, b in zip(rank0, rank1, strict=True))
    saved = state["model"]
    assert all(torch.equal(a, b) for a, b in zip(rank0, saved.values(), strict=True))
    gap = weight_gap(saved, reference["model"])
    assert gap < ATOL, gap
    # 801 rows: shards of 401 (rank 1's padded by one row), 7 batches an epoch on each rank.
    assert state["step"] == reference["steps"] == ADAM_EPOCHS * 7


def test_without_gradient_sync_the_ddp_check_fails(tmp_path: Path, reference) -> None:
    # Negative control: the same job with DDP's all-reduce switched off. Each rank then trains
    # on its own shard, the ranks drift apart, and the check above fails by orders of margin.
    rank0, rank1 = _each_rank(tmp_path, tmp_path / "run", f"train.epochs={ADAM_EPOCHS}",
                              no_grad_sync=True)
    assert not all(torch.equal(a, b) for a, b in zip(rank0, rank1, strict=True))
    gap = weight_gap(_load(tmp_path / "run" / "last.pt")["model"], reference["model"])
    assert gap > 1e6 * ATOL, gap


def test_training_loss_all_reduced_and_validation_on_the_whole_split(adam_runs,
                                                                    reference) -> None:
    history = _load(adam_runs[2] / "last.pt")["history"]
    train = [r["train/loss"] for r in history]
    val = [r["val/loss"] for r in history]
    assert train == pytest.approx(reference["train/loss"], rel=0, abs=ATOL)
    assert val == pytest.approx(reference["val/loss"], rel=0, abs=ATOL)
    assert history[-1]["val/accuracy"] * 199 == pytest.approx(round(history[-1]["val/accuracy"]
                                                                    * 199))  # 199 val rows
    # Negative controls: what rank 0 would report from its own shard (a loss not all-reduced)
    # or from half the validation rows lies far outside that tolerance.
    own = reference["rank 0 train/loss"]
    assert min(abs(a - b) for a, b in zip(own, reference["train/loss"], strict=True)) > 1e-4
    assert abs(reference["rank 0 val/loss"] - reference["val/loss"][-1]) > 1e-3


# ----------------------------------------------------------------------------- rank 0 writes


def _written_by_one_writer(run_dir: Path, n_events_files: int) -> None:
    assert len(_events(run_dir)) == n_events_files, _events(run_dir)
    names = {p.name for p in run_dir.iterdir()}
    assert {"config.yaml", "last.pt", "best.pt"} <= names, names
    assert not [n for n in names if n.endswith(".tmp") or n.startswith(".")], names
    # Each epoch's scalars written once; a full-batch solver's, once per iteration (0 = start).
    acc = ea.EventAccumulator(str(run_dir), size_guidance={ea.SCALARS: 0}).Reload()
    state = _load(run_dir / "last.pt")
    steps = (range(0, state["step"] + 1) if state["config"]["optim"]["name"] == "lbfgs"
             else range(1, state["epoch"] + 1))
    assert [e.step for e in acc.Scalars("train/loss")] == list(steps)


def test_only_rank_0_writes(lbfgs_runs: tuple[Path, Path], adam_runs) -> None:
    full_batch, after_3 = lbfgs_runs[0], adam_runs[0]
    # Nothing but the run folder next to it: rank 1 made no folder of its own.
    assert sorted(p.name for p in full_batch.parent.iterdir()) == ["ddp", "single"]
    _written_by_one_writer(full_batch, 1)
    _written_by_one_writer(after_3, 1)


# ----------------------------------------------------------------------------- resume


def test_resume_a_distributed_run_ends_as_an_uninterrupted_one(adam_runs) -> None:
    after_3, run_dir, whole, _ = adam_runs
    assert _load(after_3 / "last.pt")["epoch"] == 3
    resumed, uninterrupted = _load(run_dir / "last.pt"), _load(whole / "last.pt")
    assert resumed["epoch"] == ADAM_EPOCHS
    assert resumed["history"][:3] == _load(after_3 / "last.pt")["history"]
    # Bit for bit the weights, optimizer state and history of the two-process run that was
    # never stopped.
    assert resumed["model"].keys() == uninterrupted["model"].keys()
    for name, weight in uninterrupted["model"].items():
        assert torch.equal(resumed["model"][name], weight), name
    for key, moments in uninterrupted["optimizer"]["state"].items():
        for name, value in moments.items():
            assert torch.equal(resumed["optimizer"]["state"][key][name], value), (key, name)
    assert resumed["history"] == uninterrupted["history"]
    assert resumed["step"] == uninterrupted["step"] == ADAM_EPOCHS * 7
    # One more events file, from rank 0 of the resumed job; epochs 4 and 5 go on from 3.
    _written_by_one_writer(run_dir, 2)
    # Negative control: after 3 epochs the weights were not yet those of 5.
    assert not torch.equal(_load(after_3 / "last.pt")["model"]["linear.weight"],
                           uninterrupted["model"]["linear.weight"])
