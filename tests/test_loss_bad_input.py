"""Our hand-written BCE on bad input, against torch's: the same exception types, messages that
name the tensor and the shapes, range checks (found in any chunk, or skipped with
check_range=False), integer and mismatched dtypes, unknown reductions, label smoothing out of
range."""

import math

import pytest
import torch
import torch.nn.functional as F
from losses_helpers import REDUCTIONS

from logreg_torch import losses_fast
from logreg_torch.losses import (
    BCELoss,
    BCEWithLogitsLoss,
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
)

# ----------------------------------------------------------------------------- bad input


def _both_raise(exc, ours, theirs, match):
    if theirs is not None:
        with pytest.raises(exc):
            theirs()
    with pytest.raises(exc, match=match):
        ours()


def test_shape_mismatch_names_both_shapes():
    p, y = torch.rand(4, 3), torch.rand(4, 2)
    _both_raise(ValueError, lambda: binary_cross_entropy(p, y),
                lambda: F.binary_cross_entropy(p, y),
                r"target shape \(4, 2\).*input shape \(4, 3\)")
    _both_raise(ValueError, lambda: binary_cross_entropy_with_logits(p, y),
                lambda: F.binary_cross_entropy_with_logits(p, y), r"\(4, 2\).*\(4, 3\)")


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_probabilities_out_of_range_name_the_tensor(bad):
    p, y = torch.rand(6), torch.rand(6)
    p_bad, y_bad = p.clone(), y.clone()
    p_bad[3], y_bad[3] = bad, bad
    what = "NaN" if bad != bad else r"\[0, 1\]"
    _both_raise(RuntimeError, lambda: binary_cross_entropy(p_bad, y),
                lambda: F.binary_cross_entropy(p_bad, y), rf"input \(probabilities\).*{what}")
    _both_raise(RuntimeError, lambda: binary_cross_entropy(p, y_bad),
                lambda: F.binary_cross_entropy(p, y_bad), rf"target.*{what}")
    # torch does not check logits' targets; we do, unless check_range=False
    _both_raise(RuntimeError, lambda: binary_cross_entropy_with_logits(p, y_bad), None,
                rf"target.*{what}")


def test_out_of_range_found_in_a_later_chunk(monkeypatch):
    monkeypatch.setattr(losses_fast, "_CHUNK", 8)
    y = torch.rand(100)
    y[95] = 2.0
    with pytest.raises(RuntimeError, match=r"found values in \[.*, 2\]"):
        binary_cross_entropy_with_logits(torch.randn(100), y)


def test_check_range_false_skips_checks_and_matches_torch():
    x, y = torch.randn(8), torch.rand(8) * 3 - 1
    ours = binary_cross_entropy_with_logits(x, y, check_range=False)
    torch.testing.assert_close(ours, F.binary_cross_entropy_with_logits(x, y))
    binary_cross_entropy(torch.rand(8), y.clamp(0, 1), check_range=False)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_check_range_false_probs_returns_the_formula_for_out_of_range_values(reduction):
    """No check, no error: the formula's value, NaN where it takes the log of a negative
    number, and a target outside [0, 1] weighs the log terms as written."""
    p = torch.tensor([0.2, 1.5, -0.5, 0.7], dtype=torch.float64)
    y = torch.tensor([1.0, 0.0, 1.0, 2.0], dtype=torch.float64)
    with pytest.raises(RuntimeError):
        binary_cross_entropy(p, y, reduction=reduction)
    out = binary_cross_entropy(p, y, reduction="none", check_range=False)
    nan = float("nan")
    expected = [-math.log(0.2), nan, nan, math.log(0.3) - 2 * math.log(0.7)]
    torch.testing.assert_close(out, torch.tensor(expected, dtype=torch.float64), equal_nan=True)
    reduced = binary_cross_entropy(p, y, reduction=reduction, check_range=False)
    assert reduced.shape == (out.shape if reduction == "none" else ())
    finite = binary_cross_entropy(p[[0, 3]], y[[0, 3]], reduction=reduction, check_range=False)
    want = torch.tensor([expected[0], expected[3]], dtype=torch.float64)
    want = {"none": want, "mean": want.mean(), "sum": want.sum()}[reduction]
    torch.testing.assert_close(finite, want)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool, torch.uint8])
def test_integer_and_bool_targets_rejected(dtype):
    p = torch.rand(5)
    y = (torch.rand(5) > 0.5).to(dtype)
    _both_raise(RuntimeError, lambda: binary_cross_entropy(p, y),
                lambda: F.binary_cross_entropy(p, y), rf"target must be a floating-point.*{dtype}")
    _both_raise(RuntimeError, lambda: binary_cross_entropy_with_logits(p, y),
                lambda: F.binary_cross_entropy_with_logits(p, y), "target must be a floating")


def test_integer_input_rejected():
    _both_raise(RuntimeError, lambda: binary_cross_entropy(torch.ones(3, dtype=torch.long),
                                                           torch.ones(3)),
                lambda: F.binary_cross_entropy(torch.ones(3, dtype=torch.long), torch.ones(3)),
                "input must be a floating-point")


def test_mismatched_dtypes_rejected():
    p, y = torch.rand(5), torch.rand(5, dtype=torch.float64)
    _both_raise(RuntimeError, lambda: binary_cross_entropy(p, y),
                lambda: F.binary_cross_entropy(p, y), r"target dtype torch.float64.*torch.float32")
    _both_raise(RuntimeError, lambda: binary_cross_entropy_with_logits(p, y), None,
                "does not match input dtype")


@pytest.mark.parametrize("reduction", ["avg", "Mean", "", None])
def test_unknown_reduction_lists_valid_ones(reduction):
    p, y = torch.rand(3), torch.rand(3)
    _both_raise(ValueError, lambda: binary_cross_entropy(p, y, reduction=reduction),
                lambda: F.binary_cross_entropy(p, y, reduction=reduction), "'none', 'mean', 'sum'")
    _both_raise(ValueError, lambda: binary_cross_entropy_with_logits(p, y, reduction=reduction),
                None, "'none', 'mean', 'sum'")
    with pytest.raises(ValueError, match="reduction"):
        BCELoss(reduction=reduction)


@pytest.mark.parametrize("eps", [-0.1, 1.0, 2.0])
def test_label_smoothing_out_of_range(eps):
    p, y = torch.rand(3), torch.rand(3)
    with pytest.raises(RuntimeError, match=r"label_smoothing must be in \[0, 1\)"):
        binary_cross_entropy(p, y, label_smoothing=eps)
    with pytest.raises(RuntimeError, match="label_smoothing"):
        BCEWithLogitsLoss(label_smoothing=eps)
