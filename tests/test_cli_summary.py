"""``logreg-torch summary``, run in-process through ``cli.main``: statsmodels parity, the
table, the README example, bad input (exit code 2, one ``error:`` line on stderr)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from cli_helpers import (  # tests/ is on sys.path under pytest
    DEFAULT,
    REPO,
    one_error_line,
    trained_run,  # noqa: F401 (the run_dir fixture)
)

from logreg_torch import cli
from logreg_torch.checkpoint import load_checkpoint
from logreg_torch.config import load_config
from logreg_torch.data import DATASETS_DIR

pytestmark = pytest.mark.usefixtures("no_figures")

# ----------------------------------------------------------------------------- summary


@pytest.fixture(scope="module")
def newton_run(tmp_path_factory) -> Path:
    """configs/newton.yaml: three breast_cancer features, Newton in fp64, every row."""
    path = tmp_path_factory.mktemp("newton") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("logreg_torch.tracking.figures_available", lambda: False)
        assert cli.main(["train", str(REPO / "configs" / "newton.yaml"), f"log.run_dir={path}",
                         "--quiet"]) == 0
    return path


def test_summary_json_matches_statsmodels(newton_run, capsys) -> None:
    sm = pytest.importorskip("statsmodels.api")
    import numpy as np

    assert cli.main(["summary", str(newton_run), "--json", "--alpha", "0.1"]) == 0
    data = json.loads(capsys.readouterr().out)
    rows = data["coefficients"]
    names = ["intercept", "mean_radius", "mean_texture", "mean_smoothness"]
    assert [r["name"] for r in rows] == names
    cfg = load_config(REPO / "configs" / "newton.yaml")
    table = np.genfromtxt(DATASETS_DIR / "breast_cancer.csv", delimiter=",", names=True,
                          dtype=None, encoding="utf-8")
    X = np.column_stack([table[n] for n in names[1:]])
    y = (table["diagnosis"] == "malignant").astype(float)
    ref = sm.Logit(y, sm.add_constant(X)).fit(disp=0, tol=1e-12)
    np.testing.assert_allclose([r["coef"] for r in rows], ref.params, rtol=1e-6)
    np.testing.assert_allclose([r["std_err"] for r in rows], ref.bse, rtol=1e-4)
    np.testing.assert_allclose([r["p_value"] for r in rows], ref.pvalues, rtol=1e-4)
    np.testing.assert_allclose([r["ci_low"] for r in rows], ref.conf_int(0.1)[:, 0], rtol=1e-4)
    assert data["n_obs"] == len(y) and data["log_likelihood"] == pytest.approx(ref.llf)
    assert data["ending"]["kind"] == "converged" and cfg.optim.name == "newton"
    assert data["alpha"] == 0.1 and data["penalized"] is False


def test_summary_of_a_checkpoint_prints_the_table(newton_run, capsys) -> None:
    assert cli.main(["summary", str(newton_run / "last.pt")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("logistic regression on the original feature scale; n_obs 569")
    assert out[1].split()[:3] == ["coef", "std_err", "z"]
    assert out[2].split()[0] == "intercept" and "nan" not in " ".join(out)
    assert out[-1].startswith("fit: converged after")


def test_summary_bad_input_is_one_line_exit_2(run_dir, tmp_path, capsys) -> None:
    mlp = tmp_path / "mlp"
    assert cli.main(["train", str(DEFAULT), "model.name=mlp", "model.hidden=[4]",
                     "train.epochs=1", f"log.run_dir={mlp}", "log.histogram_every=0",
                     "--quiet"]) == 0
    capsys.readouterr()  # the run's folder and ending (--quiet still says where it is)
    assert cli.main(["summary", str(mlp)]) == 2
    assert "holds an mlp model" in one_error_line(capsys)
    # breast_cancer on all 30 features, 80% of the rows, no penalty: the classes separate
    sep = tmp_path / "sep"
    # on the CPU on every machine: Newton on separable data walks to the edge of float64
    assert cli.main(["train", str(DEFAULT), "data.source=breast_cancer", "optim.name=newton",
                     "train.batch_size=null", "train.epochs=1", "train.precision=fp64",
                     f"log.run_dir={sep}", "log.histogram_every=0", "train.device=cpu",
                     "--quiet"]) == 0
    capsys.readouterr()
    assert cli.main(["summary", str(sep)]) == 2
    line = one_error_line(capsys)
    assert line.startswith("error: perfect separation: coefficient of '") and "diverges" in line
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["summary", str(empty)]) == 2
    assert "is a folder without best.pt or last.pt" in one_error_line(capsys)
    assert cli.main(["summary", str(run_dir), "--alpha", "2"]) == 2
    assert "--alpha" in one_error_line(capsys)


def test_readme_summary_example_prints_what_the_readme_shows(tmp_path, monkeypatch,
                                                             capsys) -> None:
    text = (REPO / "README.md").read_text()
    section = text[text.index("### Coefficients and standard errors"):]
    commands = section[section.index("```bash") + 7:].split("```")[0].strip().splitlines()
    shown = section[section.index("```text") + 7:].split("```")[0].strip("\n")
    assert commands[0].startswith("logreg-torch train configs/newton.yaml")
    assert commands[1].startswith("logreg-torch summary runs/newton")
    monkeypatch.chdir(tmp_path)
    # The README shows the CPU's output: its last line holds max|grad| at float64's noise
    # floor, which a GPU's sums round otherwise. The commands run as written, on the CPU.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "newton.yaml").write_text(
        (REPO / "configs" / "newton.yaml").read_text())
    for command in commands:
        assert cli.main(command.split()[1:]) == 0
    out = capsys.readouterr().out
    assert out.strip("\n").endswith(shown)


def test_summary_says_when_best_pt_is_not_the_final_epoch(tmp_path, capsys) -> None:
    run = tmp_path / "r"
    assert cli.main(["train", str(DEFAULT), "train.epochs=4", "optim.lr=0.5",
                     f"log.run_dir={run}", "log.histogram_every=0", "--quiet"]) == 0
    best, last = load_checkpoint(run / "best.pt"), load_checkpoint(run / "last.pt")
    assert cli.main(["summary", str(run)]) == 0
    out = capsys.readouterr().out
    said = f"best.pt holds epoch {best['epoch']}; the fit ended at epoch 4" in out
    assert best["ending"]["holds_epoch"] == best["epoch"]  # its ending says which weights
    assert said == (best["epoch"] != last["epoch"])
    assert "note: the fit did not report convergence" in out  # Adam: "finished 4 epochs"
