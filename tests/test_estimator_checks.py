"""scikit-learn's own estimator checks on ``logreg_torch.estimator.LogisticRegression``.

The estimator's tags say what it is: binary only (``classifier_tags.multi_class = False``:
scikit-learn then runs its binary variants of the classifier checks and checks that a
multiclass y is refused), dense input only (``input_tags.sparse = False``: a scipy sparse X
must be refused with a clear error). Checks expected to fail, each with its reason, are in
EXPECTED_FAILED: none. One check skips itself: ``check_array_api_input`` runs only with
SCIPY_ARRAY_API=1 set (scikit-learn's own condition; the estimator declares no array-API
support, its tag's default).
"""

from __future__ import annotations

from sklearn.utils.estimator_checks import parametrize_with_checks

from logreg_torch.estimator import LogisticRegression

# check name -> why it fails. Empty: every check that the tags select passes.
EXPECTED_FAILED: dict[str, str] = {}


@parametrize_with_checks([LogisticRegression(device="cpu")],
                         expected_failed_checks=lambda est: EXPECTED_FAILED)
def test_sklearn_estimator_check(estimator, check) -> None:
    check(estimator)
