"""A resume continues the same run: one folder, one run in TensorBoard, each epoch's points
once; a run folder works as train.resume; another log.name is refused in one line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from tensorboard.backend.event_processing import event_accumulator as ea

from logreg_torch import cli
from logreg_torch.checkpoint import load_checkpoint

pytestmark = pytest.mark.usefixtures("no_figures")

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO / "configs" / "default.yaml"
FAST = ("log.histogram_every=0",)


def _steps(run: Path, tag: str = "train/loss") -> list[int]:
    acc = ea.EventAccumulator(str(run), size_guidance={ea.SCALARS: 0}).Reload()
    return [e.step for e in acc.Scalars(tag)]


def test_resume_continues_the_run_without_duplicate_points(tmp_path) -> None:
    run = tmp_path / "runs" / "run"
    assert cli.main(["train", str(DEFAULT), "train.epochs=2", *FAST, f"log.run_dir={run}",
                     "--quiet"]) == 0
    shutil.copy(run / "last.pt", tmp_path / "epoch2.pt")
    # The run folder itself as train.resume (its last.pt), two more epochs.
    resume = ["train", str(run / "config.yaml"), "train.epochs=4", f"train.resume={run}",
              "--quiet"]
    assert cli.main(resume) == 0
    assert load_checkpoint(run / "last.pt")["epoch"] == 4
    assert _steps(run) == [1, 2, 3, 4]
    # As after a kill -9 with epochs 3 and 4 logged but not checkpointed: resuming from the
    # epoch-2 checkpoint again draws epochs 3 and 4 once, the new ones.
    shutil.copy(tmp_path / "epoch2.pt", run / "last.pt")
    assert cli.main(resume) == 0
    assert _steps(run) == [1, 2, 3, 4]
    assert _steps(run, "val/loss") == [1, 2, 3, 4]
    # One run: every events file in the one folder, no sub-run.
    assert {p.parent for p in (tmp_path / "runs").rglob("events.out.tfevents.*")} == {run}


def test_resume_under_another_log_name_is_one_line(tmp_path, capsys) -> None:
    run = tmp_path / "run"
    assert cli.main(["train", str(DEFAULT), "train.epochs=1", *FAST, f"log.run_dir={run}",
                     "--quiet"]) == 0
    capsys.readouterr()
    assert cli.main(["train", str(run / "config.yaml"), "train.epochs=2", "log.name=other",
                     f"train.resume={run / 'last.pt'}", "--quiet"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: log.name='other' with train.resume: a resumed run continues "
                          "run 'default'"), err
    assert load_checkpoint(run / "last.pt")["epoch"] == 1


def test_each_process_adds_an_events_file_and_tensorboard_reads_one_run(tmp_path) -> None:
    # As the README says: TensorBoard's writer never appends to a file, so the first run and
    # each resume write one events file each, in the one folder, read as one run.
    from tensorboard.backend.event_processing import plugin_event_multiplexer as pem

    run = tmp_path / "runs" / "run"
    assert cli.main(["train", str(DEFAULT), "train.epochs=1", *FAST, f"log.run_dir={run}",
                     "--quiet"]) == 0
    for epochs in (2, 3):
        assert cli.main(["train", str(run / "config.yaml"), f"train.epochs={epochs}",
                         f"train.resume={run}", "--quiet"]) == 0
    assert len(list(run.glob("events.out.tfevents.*"))) == 3
    mux = pem.EventMultiplexer().AddRunsFromDirectory(str(tmp_path / "runs")).Reload()
    assert list(mux.Runs()) == ["run"]
    assert [e.step for e in mux.Tensors("run", "train/loss")] == [1, 2, 3]
    readme = " ".join((REPO / "README.md").read_text().split())
    assert "one for the run, one more for each resume" in readme
    assert "a resumed run appends to it" not in readme
