"""model.py: shapes, probabilities, labels, input checks, and that logistic regression learns."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from logreg_torch.model import MLP, LogisticRegression, build_model, penalized_weights

MODELS = [
    lambda d: LogisticRegression(d),
    lambda d: LogisticRegression(d, bias=False),
    lambda d: MLP(d, hidden=(8, 4), dropout=0.1),
    lambda d: MLP(d, hidden=()),
]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.mark.parametrize("make", MODELS)
@pytest.mark.parametrize("n", [0, 1, 7])
def test_shapes(make, n: int) -> None:
    model = make(3).eval()
    x = torch.randn(n, 3)
    assert model(x).shape == (n,)
    assert model.predict_proba(x).shape == (n,)
    labels = model.predict(x)
    assert labels.shape == (n,) and labels.dtype == torch.long


@pytest.mark.parametrize("make", MODELS)
def test_predict_proba_is_sigmoid_of_logits(make) -> None:
    model = make(4).eval()
    for p in model.parameters():  # logistic starts at zero; make outputs non-trivial
        nn.init.normal_(p)
    x = torch.randn(50, 4)
    probs = model.predict_proba(x)
    assert torch.equal(probs, torch.sigmoid(model(x)))
    assert ((probs > 0) & (probs < 1)).all()
    assert probs.requires_grad  # differentiable by design


def test_logistic_starts_at_half_and_ln2() -> None:
    model = LogisticRegression(5)
    x, y = torch.randn(10, 5), torch.randint(0, 2, (10,)).float()
    assert torch.equal(model.predict_proba(x), torch.full((10,), 0.5))
    loss = nn.functional.binary_cross_entropy_with_logits(model(x), y)
    assert loss.item() == pytest.approx(math.log(2))


def test_predict_threshold() -> None:
    model = LogisticRegression(1)
    with torch.no_grad():
        model.linear.weight.fill_(1.0)
    # probs = sigmoid(x): 0 -> 0.5 exactly
    x = torch.tensor([[-3.0], [0.0], [3.0]])  # probs 0.047, 0.5, 0.953
    assert model.predict(x).tolist() == [0, 1, 1]  # >= threshold
    assert model.predict(x, threshold=0.9).tolist() == [0, 0, 1]
    assert model.predict(x, threshold=0.0).tolist() == [1, 1, 1]
    assert model.predict(x, threshold=1.0).tolist() == [0, 0, 0]
    assert not model.predict(x).requires_grad
    with pytest.raises(ValueError, match="threshold"):
        model.predict(x, threshold=1.5)


@pytest.mark.parametrize("make", MODELS)
@pytest.mark.parametrize("shape", [(5,), (5, 2), (5, 4), (2, 5, 3), ()])
def test_bad_input_shape(make, shape: tuple[int, ...]) -> None:
    model = make(3)
    with pytest.raises(ValueError, match=r"expected input of shape \(N, 3\), got") as info:
        model(torch.randn(shape))
    assert str(tuple(shape)) in str(info.value)
    with pytest.raises(ValueError):
        model.predict(torch.randn(shape))


def test_parameter_count() -> None:
    def count(m: nn.Module) -> int:
        return sum(p.numel() for p in m.parameters())

    assert count(LogisticRegression(5)) == 6
    assert count(LogisticRegression(5, bias=False)) == 5
    assert count(MLP(5, hidden=(4, 3))) == (5 * 4 + 4) + (4 * 3 + 3) + (3 + 1)
    assert count(MLP(5, hidden=(4, 3), bias=False)) == 5 * 4 + 4 * 3 + 3
    linears = [m for m in LogisticRegression(5).modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 1


def test_constructor_validation() -> None:
    with pytest.raises(ValueError, match="in_features"):
        LogisticRegression(0)
    with pytest.raises(ValueError, match="dropout"):
        MLP(3, dropout=1.0)
    with pytest.raises(ValueError, match="hidden"):
        MLP(3, hidden=(4, 0))


def test_mlp_dropout_only_in_train_mode() -> None:
    model = MLP(3, hidden=(32,), dropout=0.5)
    x = torch.randn(20, 3)
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    assert not torch.equal(model(x), model(x))


def test_build_model() -> None:
    m = build_model("logistic", 4, hidden=[16], dropout=0.3, bias=False)
    assert isinstance(m, LogisticRegression) and m.linear.bias is None
    m = build_model("mlp", 4, hidden=[16, 8], dropout=0.3, bias=True)
    assert isinstance(m, MLP)
    assert [lin.out_features for lin in m.modules() if isinstance(lin, nn.Linear)] == [16, 8, 1]
    with pytest.raises(ValueError, match="logistic, mlp"):
        build_model("svm", 4, hidden=[16], dropout=0.0, bias=True)


def test_penalized_weights() -> None:
    lr = LogisticRegression(4)
    assert [w is lr.linear.weight for w in penalized_weights(lr)] == [True]
    mlp = MLP(4, hidden=(8, 4))
    ws = penalized_weights(mlp)
    assert [tuple(w.shape) for w in ws] == [(8, 4), (4, 8), (1, 4)]
    assert all(w.dim() == 2 for w in ws)
    no_bias = LogisticRegression(4, bias=False)
    assert [w is no_bias.linear.weight for w in penalized_weights(no_bias)] == [True]


def test_logistic_regression_separates_a_separable_set() -> None:
    # Two clusters split by the line x0 + x1 = 0, with a margin.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 2, generator=g)
    score = x[:, 0] + x[:, 1]
    keep = score.abs() > 0.3
    x, y = x[keep], (score[keep] > 0).float()

    model = LogisticRegression(2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    loss_fn = nn.BCEWithLogitsLoss()
    first = None
    for _ in range(300):
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        first = loss.item() if first is None else first
        loss.backward()
        optimizer.step()
    assert first == pytest.approx(math.log(2))
    assert loss.item() < 0.1
    assert torch.equal(model.predict(x), y.long())
