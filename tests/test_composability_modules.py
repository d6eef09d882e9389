"""Our loss modules are torch's: the same constructors, state dicts and deprecated arguments,
an import that loads no dynamo; and the eager CPU fast path gives the values and gradients of
the reference path that traces and transforms take."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
import torch
from composability_helpers import IMPLS, KINDS, _assert_close, _data  # tests/ is on sys.path

from logreg_torch import losses_fast
from logreg_torch.losses import BCELoss, BCEWithLogitsLoss

# ----------------------------------------------------------------------------- the modules


def test_modules_are_torch_modules_with_torch_constructors():
    w, pw = torch.rand(3), torch.rand(3)
    for ours, theirs in [(BCELoss(w, None, None, "sum"), torch.nn.BCELoss(w, None, None, "sum")),
                         (BCEWithLogitsLoss(w, None, None, "sum", pw),
                          torch.nn.BCEWithLogitsLoss(w, None, None, "sum", pw))]:
        assert isinstance(ours, type(theirs))
        assert ours.reduction == theirs.reduction == "sum"
        assert list(ours.state_dict()) == list(theirs.state_dict())
        ours.load_state_dict(theirs.state_dict())
    keyword = BCEWithLogitsLoss(weight=w, pos_weight=pw, reduction="none", label_smoothing=0.1,
                                check_range=False)
    assert keyword.check_range is False and keyword.label_smoothing == 0.1
    with pytest.raises(TypeError):
        BCELoss(w, None, None, "mean", 0.1)  # label_smoothing is keyword-only


@pytest.mark.parametrize("size_average,reduce", [(False, None), (None, False), (True, True),
                                                 (False, True)])
def test_deprecated_size_average_and_reduce_behave_as_torch(size_average, reduce):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        theirs = torch.nn.BCEWithLogitsLoss(size_average=size_average, reduce=reduce)
        ours = BCEWithLogitsLoss(size_average=size_average, reduce=reduce)
        theirs_p = torch.nn.BCELoss(None, size_average, reduce)
        ours_p = BCELoss(None, size_average, reduce)
    assert len(caught) == 4 and all(issubclass(w.category, UserWarning) for w in caught)
    assert ours.reduction == theirs.reduction == ours_p.reduction == theirs_p.reduction
    x, y = _data("probs")
    torch.testing.assert_close(ours(x, y), theirs(x, y))
    torch.testing.assert_close(ours_p(x, y), theirs_p(x, y))


def test_import_does_not_load_dynamo():
    code = "import sys, logreg_torch, logreg_torch.fast; print('torch._dynamo' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


# ----------------------------------------------------------------------------- fast path


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_fast_path_equals_reference_path(kind, reduction, monkeypatch):
    """The eager CPU fast path and the reference Functions give the same values and
    gradients (the reference is forced by pretending a trace is active)."""
    x, y = _data(kind, shape=(300, 7), dtype=torch.float32)
    w = torch.rand(7)
    fn = IMPLS[kind, "ours"]

    def run():
        xr = x.clone().requires_grad_()
        loss = fn(xr, y, w, reduction=reduction)
        return loss, torch.autograd.grad(loss, xr)[0], loss.grad_fn.name()

    fast = run()
    monkeypatch.setattr(losses_fast, "tracing_or_transformed", lambda: True)
    reference = run()
    assert "FusedLoss" in fast[2] and "FusedLoss" not in reference[2]
    _assert_close(fast[:2], reference[:2], rtol=1e-5, atol=1e-7)
