"""Full-batch solvers inside fit: they reach scikit-learn's optimum whatever the inherited lr,
stop on max|grad| <= tol within a total budget, finish a float32 stall in float64, draw a loss
curve per iteration, and every run says how it ended (FitResult, checkpoints, TensorBoard)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from tensorboard.backend.event_processing import event_accumulator as ea

from logreg_torch.checkpoint import load_checkpoint
from logreg_torch.config import ConfigError, load_config
from logreg_torch.data import prepare
from logreg_torch.fit import fit
from logreg_torch.solvers import epoch_budget, make_optimizer

pytestmark = pytest.mark.usefixtures("no_figures")

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
N_CANCER = 569
# The budget: fp64 L-BFGS at C=100 needs up to ~2,000 iterations to stall before the Newton
# finish ends it, as the CPU's kernels round (2,018 on a 260 MB-L3 Xeon: 1,000 was short there).
CANCER = ("data.source=breast_cancer", "data.val_fraction=0", "data.test_fraction=0",
          "train.batch_size=null", "train.epochs=1", "optim.max_iter=4000",
          "log.histogram_every=0")


def _fit(tmp_path, *overrides, config=None, name="run"):
    # On the CPU on every machine: the results are compared with CPU tensors and scikit-learn,
    # and the float32 floor tests depend on the CPU's rounding.
    cfg = load_config(config, ["train.device=cpu", *overrides, f"log.run_dir={tmp_path / name}"])
    return cfg, fit(cfg)


def _probs(result, cfg) -> np.ndarray:
    X, _ = prepare(cfg.data, cfg.train.seed, dtype=torch.float64).train
    model = result.model.double()
    with torch.no_grad():
        return torch.sigmoid(model(X)).numpy()


@pytest.fixture(scope="module")
def sklearn_cancer():
    """C -> scikit-learn's probabilities of malignant (our class 1) at tol 1e-12. The reference
    is newton-cholesky: sklearn's own lbfgs stops 2e-6 away from it at C=100."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    X, y = load_breast_cancer(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    out = {}
    for C in (0.01, 1.0, 100.0):
        ref = LogisticRegression(C=C, tol=1e-12, max_iter=1000, solver="newton-cholesky")
        out[C] = ref.fit(X, y).predict_proba(X)[:, 0]
    return out


# ----------------------------------------------------------------------------- 1, 2: the optimum


@pytest.mark.parametrize("solver", ["lbfgs", "newton"])
@pytest.mark.parametrize("precision", ["fp32", "fp64"])
@pytest.mark.parametrize("C", [0.01, 1.0, 100.0])
def test_breast_cancer_lands_on_sklearns_optimum(tmp_path, sklearn_cancer, solver, precision,
                                                 C) -> None:
    cfg, result = _fit(tmp_path, *CANCER, f"optim.name={solver}", f"train.precision={precision}",
                       f"loss.l2={1 / (C * N_CANCER)!r}", "optim.tol=1e-12")
    gap = np.abs(_probs(result, cfg) - sklearn_cancer[C]).max()
    assert gap < (1e-4 if precision == "fp32" else 1e-6), gap
    assert result.ending.kind == "converged", result.ending.message


def test_default_config_with_lbfgs_reaches_the_optimum_whatever_lr(tmp_path) -> None:
    # The user: configs/default.yaml (Adam, lr 0.05, 20 epochs) switched to L-BFGS.
    from sklearn.linear_model import LogisticRegression

    cfg, result = _fit(tmp_path, "optim.name=lbfgs", "train.batch_size=null",
                       config=CONFIGS / "default.yaml")
    assert cfg.optim.lr == 0.05 and make_optimizer(cfg, result.model).defaults["lr"] == 1.0
    X, y = prepare(cfg.data, cfg.train.seed, dtype=torch.float64).train
    ref = LogisticRegression(penalty=None, tol=1e-12, max_iter=10_000).fit(X.numpy(), y.numpy())
    with torch.no_grad():
        ours = torch.sigmoid(result.model.double()(X)).numpy()
    assert np.abs(ours - ref.predict_proba(X.numpy())[:, 1]).max() < 1e-4
    ending = result.ending
    assert ending.kind == "converged" and ending.grad_max <= cfg.optim.tol
    assert ending.message.startswith(f"converged after {ending.iterations} iterations "
                                     f"(max|grad| ")
    assert "<= tol 1e-07" in ending.message


def test_without_fp64_finish_fp32_says_it_stopped_at_its_floor(tmp_path) -> None:
    _, result = _fit(tmp_path, *CANCER, "optim.name=lbfgs", "loss.l2=1.757e-5",
                     "optim.tol=1e-12", "optim.fp64_finish=false")
    ending = result.ending
    assert ending.kind == "not_converged" and ending.finish_from is None
    assert "stopped at the float32 floor" in ending.message
    assert f"max|grad| {ending.grad_max:.1e} > tol 1e-12" in ending.message
    assert "train.precision=fp64" in ending.message
    assert 1e-12 < ending.grad_max < 1e-3


def test_fp32_stall_says_float64_finished_it(tmp_path) -> None:
    _, result = _fit(tmp_path, *CANCER, "optim.name=lbfgs", "loss.l2=1.757e-5",
                     "optim.tol=1e-12")
    ending = result.ending
    assert ending.kind == "converged" and 0 < ending.finish_from < ending.iterations
    assert "float32 stalled at max|grad|" in ending.message
    assert f"then {ending.iterations - ending.finish_from} float64 Newton step" in ending.message
    assert next(result.model.parameters()).dtype == torch.float32  # the model stays fp32


# ----------------------------------------------------------------------------- 1: the budget


def test_max_iter_is_the_budget_over_all_epochs(tmp_path) -> None:
    _, result = _fit(tmp_path, *CANCER, "optim.name=lbfgs", "train.epochs=4", "optim.max_iter=10",
                     "optim.tol=1e-30", "train.precision=fp64", "optim.fp64_finish=false")
    assert [r["step"] for r in result.history] == [3, 6, 9, 10]
    ending = result.ending
    assert ending.kind == "not_converged" and ending.iterations == 10
    assert "optim.max_iter spent" in ending.message and "increase optim.max_iter" in ending.message


def test_epoch_budget_shares_and_carries_forward() -> None:
    assert [epoch_budget(10, 4, e, used) for e, used in [(0, 0), (1, 3), (2, 6), (3, 9)]] == \
        [3, 3, 3, 1]
    assert epoch_budget(10, 4, 1, 1) == 5  # an epoch that used less leaves it to the next


def test_converged_solver_stops_before_the_last_epoch_and_checkpoints_say_so(tmp_path) -> None:
    _, result = _fit(tmp_path, *CANCER, "optim.name=newton", "train.epochs=5", "loss.l2=0.01",
                     "optim.max_iter=50", "data.val_fraction=0.2", "optim.tol=1e-9")
    assert result.ending.kind == "converged" and len(result.history) < 5
    assert result.stopped_early
    for name in ("last.pt", "best.pt"):
        assert load_checkpoint(result.run_dir / name)["ending"] == result.ending.as_dict()


# ----------------------------------------------------------------------------- 3: the curve


@pytest.mark.parametrize("solver", ["lbfgs", "newton"])
def test_loss_curve_per_iteration_in_tensorboard(tmp_path, solver) -> None:
    _, result = _fit(tmp_path, *CANCER, f"optim.name={solver}", "loss.l2=0.01",
                     "train.epochs=2", "data.val_fraction=0.2", "train.precision=fp64")
    acc = ea.EventAccumulator(str(result.run_dir), size_guidance={ea.SCALARS: 0}).Reload()
    loss = acc.Scalars("train/loss")
    grad = acc.Scalars("weights/grad_norm")
    n = result.ending.iterations
    assert [e.step for e in loss] == list(range(n + 1)) == [e.step for e in grad]
    assert loss[0].value == pytest.approx(np.log(2), rel=1e-6)  # zeros: p = 0.5 everywhere
    assert loss[-1].value < loss[0].value and grad[-1].value <= 1e-7
    # validation points at the iteration each epoch ended
    assert [e.step for e in acc.Scalars("val/loss")] == [r["step"] for r in result.history]
    (text_tag,) = [t for t in acc.PluginTagToContent("text") if t.startswith("ending")]
    (text,) = acc.Tensors(text_tag)
    assert text.tensor_proto.string_val[0].decode() == result.ending.message


# ----------------------------------------------------------------------------- endings


def test_epoch_endings_name_the_best_checkpoint(tmp_path) -> None:
    tiny = ("data.source=synthetic", "data.n_samples=200", "data.n_features=5",
            "log.histogram_every=0", "optim.lr=0.5", "train.batch_size=32")
    _, done = _fit(tmp_path, *tiny, "train.epochs=3", name="done")
    best = done.best["epoch"]
    assert done.ending.kind == "finished"
    assert done.ending.message == f"finished 3 epochs; best epoch {best} (best.pt)"
    _, early = _fit(tmp_path, *tiny, "train.epochs=60", "train.early_stopping_patience=2",
                    name="early")
    assert early.ending.kind == "early_stopping" and len(early.history) < 60
    assert early.ending.message == (f"early stopping: no val/loss improvement for 2 epochs; best "
                                    f"epoch {early.best['epoch']} (best.pt)")
    assert load_checkpoint(early.run_dir / "last.pt")["ending"]["kind"] == "early_stopping"


@pytest.fixture(scope="module")
def fair_csv(tmp_path_factory) -> Path:
    """statsmodels' 'fair' survey (6,366 rows, 8 covariates) with a yes/no outcome: a float32
    L-BFGS stalls above tol 1e-7 on it and the float64 finish takes over."""
    fair = pytest.importorskip("statsmodels.datasets.fair").load_pandas().data
    fair["had_affair"] = np.where(fair.pop("affairs") > 0, "yes", "no")
    path = tmp_path_factory.mktemp("fair") / "fair.csv"
    fair.to_csv(path, index=False)
    return path


@pytest.mark.parametrize("solver", ["lbfgs", "newton"])
def test_run_folder_holds_the_optimum_its_ending_announces(tmp_path, capsys, fair_csv,
                                                          solver) -> None:
    # The user: configs/default.yaml switched to a full-batch solver, no validation
    # split. best.pt held epoch 2, the float32 point before the finish, with the whole fit's
    # ending stamped in it; summary and predict read it (coefficients 7e-3 standard errors
    # from statsmodels, probabilities 3e-4).
    from logreg_torch import cli

    sm = pytest.importorskip("statsmodels.api")
    run = tmp_path / "run"
    assert cli.main(["train", str(CONFIGS / "default.yaml"), "data.source=csv",
                     f"data.path={fair_csv}", "data.target=had_affair", f"optim.name={solver}",
                     "train.batch_size=null", "data.val_fraction=0", "log.histogram_every=0",
                     "train.device=cpu", f"log.run_dir={run}", "--quiet"]) == 0
    best, last = load_checkpoint(run / "best.pt"), load_checkpoint(run / "last.pt")
    assert best["epoch"] == last["epoch"] and best["ending"] == last["ending"]
    ending = best["ending"]
    assert ending["kind"] == "converged" and ending["holds_epoch"] == best["epoch"]
    if solver == "lbfgs":
        assert "float64 Newton step" in ending["message"]  # the finish ran
    capsys.readouterr()
    assert cli.main(["summary", str(run), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["coefficients"]
    assert cli.main(["predict", str(run), str(fair_csv), "-o", str(tmp_path / "p.npy")]) == 0
    data = pd.read_csv(fair_csv)
    y = (data.pop("had_affair") == "yes").to_numpy(float)
    X = sm.add_constant(data.to_numpy())
    ref = sm.Logit(y, X).fit(disp=0, method="newton", tol=1e-12)
    coef = np.array([r["coef"] for r in rows])
    assert [r["name"] for r in rows] == ["intercept", *data.columns]
    assert (np.abs(coef - ref.params) / ref.bse).max() < 1e-4
    assert np.abs(np.load(tmp_path / "p.npy") - ref.predict(X)).max() < 1e-6


def test_an_earlier_best_pt_is_stamped_with_its_own_iterate() -> None:
    # With early stopping on a validation split best.pt may hold an earlier iterate than the
    # last: its ending says so, with that iterate's own figures, and never "converged".
    from logreg_torch.runs import Ending

    run = Ending("converged", "converged after 12 iterations (...)", epochs=3, iterations=12,
                 grad_max=2.6e-9, tol=1e-7, finish_from=11, holds_epoch=3)
    history = [{"epoch": 1, "step": 5, "grad_norm": 1e-3}, {"epoch": 2, "step": 10,
                                                            "grad_norm": 3.5e-5}]
    stamped = run.stamp({"epoch": 2, "history": history}, solver=True)
    assert stamped["kind"] == "earlier_iterate" and stamped["holds_epoch"] == 2
    assert (stamped["iterations"], stamped["grad_max"], stamped["finish_from"]) == (10, 3.5e-5,
                                                                                    None)
    assert stamped["message"].startswith("epoch 2's iterate, the lowest val/loss: max|grad| "
                                         "3.5e-05 after 10 iterations")
    assert stamped["message"].endswith("the run: converged after 12 iterations (...)")
    assert run.stamp({"epoch": 3, "history": history}, solver=True) == run.as_dict()
    adam = Ending("finished", "finished 3 epochs; best epoch 2 (best.pt)", epochs=3,
                  best_epoch=2, holds_epoch=3)
    assert adam.stamp({"epoch": 2, "history": history}, solver=False) == {
        **adam.as_dict(), "holds_epoch": 2}


# ----------------------------------------------------------------------------- 4: newton config


@pytest.mark.parametrize(("overrides", "words"), [
    (("model.name=mlp",), ["model.name 'logistic'", "mlp"]),
    (("loss.l1=0.01",), ["loss.l1", "use loss.l2", "adam"]),
    (("train.precision=bf16",), ["train.precision", "fp32 or fp64"]),
    (("train.batch_size=32",), ["full-batch", "train.batch_size: null"]),
])
def test_newton_config_errors_name_the_key_and_the_alternative(overrides, words) -> None:
    base = ("optim.name=newton", "train.batch_size=null")
    with pytest.raises(ConfigError) as e:
        load_config(None, [*base, *overrides])
    assert "newton" in str(e.value) and "\n" not in str(e.value)
    for word in words:
        assert word in str(e.value)


def test_newton_with_pos_weight_and_l2_matches_sklearn(tmp_path) -> None:
    from sklearn.linear_model import LogisticRegression

    cfg, result = _fit(tmp_path, "data.source=synthetic", "data.n_samples=600",
                       "data.val_fraction=0", "optim.name=newton", "train.batch_size=null",
                       "train.precision=fp64", "loss.pos_weight=3.0", "loss.l2=0.01",
                       "optim.tol=1e-12", "train.epochs=1", "log.histogram_every=0")
    X, y = prepare(cfg.data, cfg.train.seed, dtype=torch.float64).train
    ref = LogisticRegression(C=1 / (0.01 * len(X)), tol=1e-13, max_iter=10_000,
                             class_weight={0: 1.0, 1: 3.0}, solver="newton-cholesky"
                             ).fit(X.numpy(), y.numpy())
    w = result.model.linear.weight.detach()[0].numpy()
    np.testing.assert_allclose(w, ref.coef_[0], rtol=1e-7, atol=1e-9)
    assert result.ending.kind == "converged" and result.ending.iterations <= 15


def test_a_resumed_solve_keeps_the_curve_of_its_first_iterations(tmp_path) -> None:
    # A resume purges the points after its checkpoint's step. A full-batch solver's x axis is
    # the iteration, not the epoch: purging from epoch + 1 would erase most of the first run's
    # descent (seen: 31 scalars dropped, train/loss steps [0, 1, 12] left).
    base = ["optim.name=lbfgs", "train.batch_size=null", "optim.tol=0", "optim.max_iter=40",
            "optim.fp64_finish=false", "log.histogram_every=0", f"log.run_dir={tmp_path / 'r'}",
            "train.device=cpu"]
    first = fit(load_config(CONFIGS / "default.yaml", [*base, "train.epochs=2"]))
    before = int(first.history[-1]["step"])
    assert before > 3  # the first run took several iterations: there is a curve to keep
    fit(load_config(CONFIGS / "default.yaml",
                    [*base, "train.epochs=4", f"train.resume={tmp_path / 'r' / 'last.pt'}"]))
    acc = ea.EventAccumulator(str(tmp_path / "r"))
    acc.Reload()
    steps = [e.step for e in acc.Scalars("train/loss")]
    assert steps == list(range(len(steps)))  # one point per iteration, none lost or doubled
    assert steps[-1] > before
