"""What a run writes is what it wrote before the run was made faster (issue 24): the same
TensorBoard tags at the same steps (scalars, histograms, PR curve, figures, text, hparams,
custom scalars) and the same checkpoint files with the same keys. The fixture was written by
this file run on the code before (commit 510e625):

    PYTHONPATH=<that commit's tree> python tests/test_run_outputs.py tests/fixtures/run_outputs.json
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch
from tensorboard.backend.event_processing import event_accumulator as ea

from logreg_torch.config import load_config
from logreg_torch.fit import fit

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "run_outputs.json"
LOAD_ALL = {ea.SCALARS: 0, ea.HISTOGRAMS: 0, ea.TENSORS: 0, ea.IMAGES: 0}


def run_outputs(run_dir: Path) -> dict:
    """A 3-epoch run of configs/default.yaml with a test split, in ``run_dir``: its tags (with
    steps; image sizes) and its checkpoints' keys."""
    cfg = load_config(REPO / "configs" / "default.yaml",
                      [f"log.run_dir={run_dir}", "train.epochs=3", "data.test_fraction=0.2"])
    fit(cfg)
    acc = ea.EventAccumulator(str(run_dir), size_guidance=LOAD_ALL).Reload()
    tags = acc.Tags()
    out: dict = {
        "scalars": {t: [e.step for e in acc.Scalars(t)] for t in sorted(tags[ea.SCALARS])},
        "histograms": {t: [e.step for e in acc.Histograms(t)]
                       for t in sorted(tags[ea.HISTOGRAMS])},
        "images": {t: [[e.step, e.width, e.height] for e in acc.Images(t)]
                   for t in sorted(tags[ea.IMAGES])},
        "tensors": {t: [e.step for e in acc.Tensors(t)] for t in sorted(tags[ea.TENSORS])},
        "plugins": {p: sorted(acc.PluginTagToContent(p))
                    for p in ("text", "pr_curves", "hparams", "custom_scalars")},
        "events_files": len(list(run_dir.glob("events.out.tfevents.*"))),
        "files": sorted(p.name for p in run_dir.iterdir() if not p.name.startswith("events")),
    }
    for name in ("last.pt", "best.pt"):
        state = torch.load(run_dir / name, weights_only=False)
        out[name] = {
            "keys": sorted(state),
            "model": sorted(state["model"]),
            "optimizer": sorted(state["optimizer"]),
            "history": sorted(state["history"][-1]),
            "ending": sorted(state["ending"] or {}),
            "epoch": state["epoch"],
        }
    return out


# Added on purpose since the fixture was written (issue 23): each checkpoint's ending names the
# epoch whose weights that checkpoint holds.
ADDED_ENDING_KEYS = ["holds_epoch"]


def test_run_writes_what_it_wrote_before(tmp_path: Path) -> None:
    expected = json.loads(FIXTURE.read_text())
    for name in ("last.pt", "best.pt"):
        expected[name]["ending"] = sorted(expected[name]["ending"] + ADDED_ENDING_KEYS)
    got = json.loads(json.dumps(run_outputs(tmp_path / "run")))  # tuples as lists
    for key in expected:
        assert got[key] == expected[key], key
    assert set(got) == set(expected)


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        Path(sys.argv[1]).write_text(json.dumps(run_outputs(Path(tmp) / "run"), indent=1) + "\n")
