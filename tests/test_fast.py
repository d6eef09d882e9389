"""fast.py: the fused linear + BCE-with-logits Function against the plain path.

The plain path is ``head(features).squeeze(-1)`` followed by our
``binary_cross_entropy_with_logits``; the fused Function must give the same loss and the same
gradients w.r.t. weight, bias and features, for every layout and block split. Then ``fit`` must
train the same model with ``train.fast_path`` on and off.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from logreg_torch import fast, runtime
from logreg_torch.config import load_config
from logreg_torch.fast import linear_bce_with_logits, split_head
from logreg_torch.losses import binary_cross_entropy_with_logits
from logreg_torch.model import MLP, LogisticRegression
from logreg_torch.train import fit

BLOCK = 8  # small blocks, so tiny inputs still span several of them
D = 5
TOL = {torch.float64: 1e-12, torch.float32: 1e-5}


@pytest.fixture(autouse=True)
def _small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fast, "BLOCK_ROWS", BLOCK)
    torch.manual_seed(0)


def _inputs(n: int, dtype: torch.dtype, layout: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (a leaf that requires grad) in the given layout, and targets, hard and soft."""
    if layout == "row":
        features = torch.randn(n, D, dtype=dtype)
    else:  # column-major: each feature contiguous, as fit stores full-batch X
        features = torch.randn(D, n, dtype=dtype).t()
        assert features.stride() == (1, n)
    targets = torch.randint(0, 2, (n,)).to(dtype)
    targets[::3] = torch.rand(len(targets[::3]), dtype=dtype)  # soft labels too
    return features.requires_grad_(), targets


def _grads(loss: torch.Tensor, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    return list(torch.autograd.grad(loss, tensors))


def _close(a: torch.Tensor, b: torch.Tensor, tol: float) -> None:
    torch.testing.assert_close(a, b, rtol=tol, atol=tol)


@pytest.mark.parametrize("n", [BLOCK - 3, BLOCK, 3 * BLOCK + 5])
@pytest.mark.parametrize("layout", ["row", "column"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("pos_weight", [None, 2.5])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fused_equals_plain(n: int, layout: str, bias: bool, pos_weight: float | None,
                            dtype: torch.dtype) -> None:
    features, targets = _inputs(n, dtype, layout)
    head = nn.Linear(D, 1, bias=bias).to(dtype)
    pw = None if pos_weight is None else torch.tensor(pos_weight, dtype=dtype)
    wrt = [head.weight, features] + ([head.bias] if bias else [])

    fused = linear_bce_with_logits(features, head, targets, pw)
    plain = binary_cross_entropy_with_logits(head(features).squeeze(-1), targets, pos_weight=pw)
    tol = TOL[dtype]
    _close(fused, plain, tol)
    assert fused.dtype == plain.dtype == dtype
    # An upstream gradient other than 1 (a scaled loss) must scale every gradient.
    for a, b in zip(_grads(3 * fused, wrt), _grads(3 * plain, wrt), strict=True):
        _close(a, b, tol)


@pytest.mark.parametrize("pos_weight", [None, 2.5])
def test_blocks_spread_over_threads_give_the_one_thread_result(pos_weight) -> None:
    """With several torch threads the blocks run on a pool, each thread summing its own share
    of X^T g; the result must match one thread, and runs must be repeatable."""
    features, targets = _inputs(20 * BLOCK + 3, torch.float64, "column")
    head = nn.Linear(D, 1).double()
    pw = None if pos_weight is None else torch.tensor(pos_weight, dtype=torch.float64)
    wrt = [head.weight, head.bias, features]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = [linear_bce_with_logits(features, head, targets, pw)]
        one += _grads(one[0], wrt)
        torch.set_num_threads(3)
        for _ in range(2):
            many = [linear_bce_with_logits(features, head, targets, pw)]
            many += _grads(many[0], wrt)
            assert runtime._POOL is not None and runtime._POOL_KEY[1] == 3
            for a, b in zip(many, one, strict=True):
                _close(a, b, 1e-12)
    finally:
        torch.set_num_threads(threads)


def test_a_forked_child_gets_its_own_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pool's threads do not survive fork(): a child using the parent's pool object would
    wait forever for work that no thread picks up. A new process id means a new pool."""
    parent = runtime.thread_pool(2)
    assert runtime.thread_pool(2) is parent
    monkeypatch.setattr(runtime.os, "getpid", lambda: -1)
    child = runtime.thread_pool(2)
    assert child is not parent
    assert child.submit(lambda: 42).result(timeout=10) == 42


def test_only_the_gradients_asked_for() -> None:
    features, targets = _inputs(3 * BLOCK, torch.float64, "row")
    features.requires_grad_(False)
    head = nn.Linear(D, 1).double()
    head.bias.requires_grad_(False)
    fused = linear_bce_with_logits(features, head, targets)
    plain = binary_cross_entropy_with_logits(head(features).squeeze(-1), targets)
    (gw,) = _grads(fused, [head.weight])
    _close(gw, _grads(plain, [head.weight])[0], 1e-12)


def test_mlp_gradients_flow_through_the_body() -> None:
    features, targets = _inputs(3 * BLOCK + 5, torch.float64, "row")
    model = MLP(D, hidden=(6, 4)).double()
    body, head = split_head(model)
    params = list(model.parameters())
    fused = linear_bce_with_logits(body(features), head, targets)
    plain = binary_cross_entropy_with_logits(model(features), targets)
    _close(fused, plain, 1e-12)
    got, want = _grads(fused, params + [features]), _grads(plain, params + [features])
    assert all(g.abs().sum() > 0 for g in got[:2])  # the first layer really gets a gradient
    for a, b in zip(got, want, strict=True):
        _close(a, b, 1e-12)


def test_split_head() -> None:
    assert split_head(LogisticRegression(3))[1].out_features == 1
    assert split_head(nn.Linear(3, 1)) is None  # no body_and_head: plain path


@pytest.mark.parametrize("features, head", [
    (torch.randn(4, 2, D), nn.Linear(D, 1)),  # 3-D features
    (torch.randn(4, D), nn.Linear(D, 2)),  # two outputs
    (torch.randn(0, D), nn.Linear(D, 1)),  # empty
], ids=["3d", "two-outputs", "empty"])
def test_bad_input_raises_value_error(features: torch.Tensor, head: nn.Linear) -> None:
    with pytest.raises(ValueError, match="fused path"):
        linear_bce_with_logits(features, head, torch.zeros(features.shape[0]))


def test_targets_out_of_range_are_rejected() -> None:
    with pytest.raises(RuntimeError, match=r"\[0, 1\]"):
        linear_bce_with_logits(torch.randn(4, D), nn.Linear(D, 1), torch.full((4,), 2.0))


# Inputs fit never passes (it gives (N,) targets and a scalar pos_weight), held to the plain
# loss's behaviour all the same.


def test_per_row_pos_weight_across_blocks() -> None:
    features, targets = _inputs(3 * BLOCK + 5, torch.float64, "row")
    head = nn.Linear(D, 1).double()
    pw = torch.rand(len(targets), dtype=torch.float64) + 0.5  # broadcasts to (N,): allowed
    fused = linear_bce_with_logits(features, head, targets, pw)
    plain = binary_cross_entropy_with_logits(head(features).squeeze(-1), targets, pos_weight=pw)
    _close(fused, plain, 1e-12)


def test_targets_of_another_shape_or_dtype_raise() -> None:
    with pytest.raises(ValueError, match=r"targets of shape \(1,\) must be \(4,\)"):
        linear_bce_with_logits(torch.randn(4, D), nn.Linear(D, 1), torch.zeros(1))
    with pytest.raises(ValueError, match="must be"):
        linear_bce_with_logits(torch.randn(4, D), nn.Linear(D, 1), torch.zeros(4, 1))
    with pytest.raises(RuntimeError, match="dtype"):
        linear_bce_with_logits(torch.randn(4, D), nn.Linear(D, 1), torch.zeros(4).double())
    with pytest.raises(ValueError, match="pos_weight"):
        linear_bce_with_logits(torch.randn(4, D), nn.Linear(D, 1), torch.zeros(4),
                               torch.ones(3))


# ----------------------------------------------------------------------------- fit


CASES = {
    "logistic-adam-minibatch": ["optim.name=adam", "optim.lr=0.05", "train.batch_size=16"],
    "logistic-lbfgs-full-batch": ["optim.name=lbfgs", "optim.lr=1.0", "optim.max_iter=20",
                                  "train.batch_size=null", "loss.l2=0.01"],
    "mlp-sgd": ["model.name=mlp", "model.hidden=[8]", "optim.name=sgd", "optim.lr=0.1",
                "optim.momentum=0.9", "train.batch_size=32"],
    "smoothing-balanced": ["optim.name=adam", "train.batch_size=32", "loss.label_smoothing=0.1",
                           "loss.pos_weight=balanced", "data.weights=[0.7, 0.3]"],
    "lbfgs-smoothing-balanced": ["optim.name=lbfgs", "optim.lr=1.0", "optim.max_iter=20",
                                 "train.batch_size=null", "loss.label_smoothing=0.1",
                                 "loss.pos_weight=balanced", "data.weights=[0.7, 0.3]"],
}


def _fit_params(tmp_path, monkeypatch, overrides: list[str], fast_path: bool,
                precision: str = "fp64"):
    calls: list[torch.Tensor] = []

    def spy(features, head, targets, *args, **kwargs):
        calls.append(features)
        return linear_bce_with_logits(features, head, targets, *args, **kwargs)

    monkeypatch.setattr("logreg_torch.objective.linear_bce_with_logits", spy)
    cfg = load_config(None, [
        "data.source=synthetic", "data.n_samples=200", f"data.n_features={D}",
        "data.n_informative=3", "data.val_fraction=0", "data.test_fraction=0",
        "train.epochs=3", "train.device=cpu",
        f"train.precision={precision}", "log.histogram_every=0",
        f"log.run_dir={tmp_path / str(fast_path)}",
        f"train.fast_path={str(fast_path).lower()}", *overrides])
    result = fit(cfg)
    return [p.detach().clone() for p in result.model.parameters()], result.history, calls


# How far the two paths may drift apart in training. They compute the same function and differ
# only in the order of the sums over rows (blocks of BLOCK rows and a thread pool against
# torch's reductions): each loss and gradient then differs by about sqrt(n)*u relative, u the
# unit roundoff (fp64 2^-53 = 1.1e-16, fp32 2^-24 = 6e-8), n <= 200 rows: ~1.6e-15 and ~8e-7.
# These convex (MLP: smooth) problems at these step sizes do not amplify a gradient
# perturbation: a step moves the gap by at most about lr * (gradient gap), so after at most
# 3 epochs (39 Adam/SGD steps of lr <= 0.1; 60 L-BFGS iterations of step ~1) the weights, of
# size ~1, drift at most ~60 * 8e-7 = 5e-5 apart in fp32 (1e-13 in fp64). Tolerances: twice
# that bound in fp32, and the earlier 1e-9/1e-10 in fp64. Measured in fp32: gaps of 3e-8 to
# 9e-8 (about one ulp). For scale, a change in the math rather than the rounding, a 2% smaller
# lr, moves the Adam and SGD weights by 8e-3 and 1e-2 (L-BFGS, which converges, by 7e-6).
FIT_TOL = {"fp64": {"rtol": 1e-9, "atol": 1e-10}, "fp32": {"rtol": 1e-4, "atol": 1e-4}}


@pytest.mark.parametrize("precision", ["fp64", "fp32"])
@pytest.mark.parametrize("case", list(CASES))
def test_fit_fast_path_on_and_off_agree(case, precision, tmp_path, monkeypatch) -> None:
    on, hist_on, calls_on = _fit_params(tmp_path, monkeypatch, CASES[case], True, precision)
    off, hist_off, calls_off = _fit_params(tmp_path, monkeypatch, CASES[case], False, precision)
    assert calls_on and not calls_off  # the fused Function really ran, and only when on
    assert all(x.dtype == (torch.float64 if precision == "fp64" else torch.float32)
               for x in calls_on)
    if "lbfgs" in case:  # full batch: X stored column-major for the fused matrix-vector products
        assert all(x.stride(0) == 1 for x in calls_on)
    tol = FIT_TOL[precision]
    for a, b in zip(on, off, strict=True):
        torch.testing.assert_close(a, b, **tol)
    for a, b in zip(hist_on, hist_off, strict=True):
        assert a["train/loss"] == pytest.approx(b["train/loss"], rel=tol["rtol"])
