"""The training criterion inside fit: pos_weight, l2/l1 penalties, label smoothing."""

from __future__ import annotations

import pytest
import torch
from test_fit import (  # tests/ is on sys.path under pytest
    config,
    run,
)

from logreg_torch.data import prepare
from logreg_torch.losses import binary_cross_entropy_with_logits
from logreg_torch.train import (
    FitResult,
    fit,
    make_objective,
    predict_proba,
)

pytestmark = pytest.mark.usefixtures("no_figures")


def test_pos_weight_balanced(tmp_path) -> None:
    imbalanced = ("data.weights=[0.8,0.2]", "data.n_samples=500", "optim.name=lbfgs",
                  "optim.lr=1", "train.batch_size=null", "train.epochs=3")
    cfg = config(tmp_path, *imbalanced, "loss.pos_weight=balanced")
    X, y = prepare(cfg.data, cfg.train.seed).train
    n_pos = float(y.sum())
    pos_weight = (len(y) - n_pos) / n_pos
    objective = make_objective(cfg, y, torch.device("cpu"), torch.float32)
    assert float(objective.pos_weight) == pytest.approx(pos_weight)
    assert pos_weight > 3  # 80/20

    balanced = fit(cfg)
    plain = run(tmp_path, *imbalanced, name="plain")
    p_plain = predict_proba(plain.model, X).double()
    p_balanced = predict_proba(balanced.model, X).double()
    pos, neg = y == 1, y == 0
    # At the optimum the bias gradient is 0: sum of w_i (p_i - y_i) = 0, with w = pos_weight
    # on positives. Unweighted that makes the mean probability the share of positives.
    assert float(p_plain.mean()) == pytest.approx(float(y.mean()), abs=1e-4)
    assert float(p_balanced[neg].sum()) == pytest.approx(
        pos_weight * float((1 - p_balanced[pos]).sum()), rel=1e-3)
    # Weighting the rare class up moves predictions towards it.
    assert float(p_balanced.mean()) > float(p_plain.mean()) + 0.05
    assert balanced.history[-1]["val/recall"] > plain.history[-1]["val/recall"]


def _weight(result: FitResult) -> torch.Tensor:
    return result.model.linear.weight.detach().flatten()


def test_l2_shrinks_the_weights_but_not_the_bias(tmp_path) -> None:
    lbfgs = ("optim.name=lbfgs", "optim.lr=1", "train.batch_size=null", "train.epochs=2")
    none = run(tmp_path, *lbfgs, name="none")
    some = run(tmp_path, *lbfgs, "loss.l2=0.1", name="some")
    huge = run(tmp_path, *lbfgs, "loss.l2=1e4", name="huge")
    norms = [float(_weight(r).norm()) for r in (none, some, huge)]
    assert norms[0] > norms[1] > norms[2]
    assert norms[2] < 1e-3
    # The bias is never penalised: with w ~ 0 it fits the share of positives.
    cfg = config(tmp_path, *lbfgs)
    y = prepare(cfg.data, cfg.train.seed).train[1]
    assert float(torch.sigmoid(huge.model.linear.bias.detach())) == pytest.approx(float(y.mean()),
                                                                         abs=1e-3)


def test_l1_shrinks_the_l1_norm(tmp_path) -> None:
    plain = run(tmp_path, "train.epochs=10", name="plain")
    l1 = run(tmp_path, "train.epochs=10", "loss.l1=0.05", name="l1")
    assert float(_weight(l1).abs().sum()) < 0.7 * float(_weight(plain).abs().sum())
    # The 2 noise features (of 5) are pushed towards 0 harder than the informative ones.
    assert float(_weight(l1)[3:].abs().max()) < 0.05


def test_label_smoothing_trains_on_softened_targets(tmp_path) -> None:
    common = ("data.source=breast_cancer", "optim.name=lbfgs", "optim.lr=1",
              "train.batch_size=null", "train.epochs=2", "loss.l2=1e-3")
    plain = run(tmp_path, *common, name="plain")
    smooth = run(tmp_path, *common, "loss.label_smoothing=0.2", name="smooth")
    cfg = config(tmp_path, *common)
    X, y = prepare(cfg.data, cfg.train.seed).train
    soft = y * 0.8 + 0.1
    with torch.no_grad():
        logits = smooth.model(X)
        # L-BFGS reports the loss at its final point: our BCE against targets 0.1 / 0.9.
        assert smooth.history[-1]["train/loss"] == pytest.approx(
            float(binary_cross_entropy_with_logits(logits, soft)), rel=1e-5)
        assert smooth.history[-1]["train/loss"] > 1.2 * float(
            binary_cross_entropy_with_logits(logits, y))
    p_plain = predict_proba(plain.model, X).double()
    p_smooth = predict_proba(smooth.model, X).double()
    # The bias is not penalised, so at the optimum the mean probability is the mean target.
    assert float(p_smooth.mean()) == pytest.approx(float(soft.mean()), abs=1e-4)
    # Softer targets, less confident predictions.
    assert float((p_smooth - 0.5).abs().mean()) < float((p_plain - 0.5).abs().mean()) - 0.05
    assert float(logits.abs().max()) < float(plain.model(X).detach().abs().max())
