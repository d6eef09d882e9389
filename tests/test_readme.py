"""Every ``logreg-torch`` line of the README's Training section works as written, after two
default runs (so ``runs/default-*`` expands to two folders, as it does for a user who follows
the quick start and then this section). Run in-process through ``cli.main`` in a temp dir."""

from __future__ import annotations

import glob
import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest

from logreg_torch import cli

REPO = Path(__file__).resolve().parents[1]


def section_commands(title: str) -> list[str]:
    """The ``logreg-torch`` lines of the ```bash blocks under ``## title``."""
    text = (REPO / "README.md").read_text()
    section = text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines()
            if line.strip().startswith("logreg-torch ")]


def expand(line: str) -> list[str]:
    """The words of a shell line: comments dropped, globs expanded in sorted order (bash)."""
    words = []
    for word in shlex.split(line, comments=True):
        matches = sorted(glob.glob(word)) if any(c in word for c in "*?[") else []
        words += matches or [word]
    return words


def test_training_section_commands_work_after_two_default_runs(tmp_path, monkeypatch,
                                                               capsys) -> None:
    monkeypatch.setattr("logreg_torch.tracking.figures_available", lambda: False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").symlink_to(REPO / "configs")
    (tmp_path / "logreg_torch").mkdir()
    (tmp_path / "logreg_torch" / "datasets").symlink_to(REPO / "logreg_torch" / "datasets")
    commands = section_commands("Training")
    assert len(commands) >= 7 and any("runs/default-*" in c for c in commands), commands
    for _ in range(2):
        assert cli.main(["train", "configs/default.yaml", "--quiet"]) == 0
    assert len(glob.glob("runs/default-*")) == 2
    for line in commands:
        capsys.readouterr()
        words = expand(line)
        assert cli.main(words[1:]) == 0, f"{line}: {capsys.readouterr().err}"
        out, err = capsys.readouterr()
        assert "Traceback" not in err and "error:" not in err, (line, err)
        if "--json" in words:
            assert json.loads(out)["n"] > 0
        if "runs/default-*" in line:
            newest = sorted(glob.glob("runs/default-*"))[-1]
            assert f"using {newest}/best.pt, the newest of" in err, (line, err)
    probs = np.load("probs.npy")
    assert probs.shape == (1000,)
    assert Path("preds.csv").read_text().count("\n") == 1001


def test_development_section_names_installable_tools() -> None:
    # `pip install -e ".[test,dev]"` is the first line; every extra it names exists.
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    text = (REPO / "README.md").read_text().split("\n## Development\n", 1)[1]
    extras = re.search(r'pip install -e "\.\[([a-z,]+)\]"', text).group(1).split(",")
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert set(extras) <= set(declared["optional-dependencies"])
    assert any(d.startswith("ruff") for d in declared["optional-dependencies"]["dev"])
    assert any(d.startswith("matplotlib") for d in declared["dependencies"])
