"""metrics.py against scikit-learn, torchmetrics and a direct numpy ECE: our own nine metrics
(logreg_torch/metrics.py says why they are not torchmetrics') on random scores, ties, one
class, all-equal scores, a large split, and on CUDA."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from sklearn import metrics as skm
from torchmetrics.classification import BinaryCalibrationError
from torchmetrics.functional import classification as tmf

from logreg_torch.metrics import METRIC_NAMES, binary_metrics, format_metrics_table

TOL = 1e-6


def _data(seed: int, n: int, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Random probabilities and targets, informative enough that both classes get predicted."""
    g = torch.Generator().manual_seed(seed)
    pos_rate = 0.1 if kind == "imbalanced" else 0.5
    targets = (torch.rand(n, generator=g) < pos_rate).long()
    targets[0], targets[1] = 0, 1  # both classes present
    logits = 1.5 * (2 * targets - 1).double() + torch.randn(n, generator=g, dtype=torch.float64)
    probs = torch.sigmoid(logits)
    if kind == "ties":
        probs = (probs * 10).round() / 10  # many equal scores, some exactly 0.5
        probs = probs.clamp(0.05, 0.95)  # keep log loss finite for sklearn's eps clipping
    return probs, targets


def _numpy_ece(probs: np.ndarray, targets: np.ndarray, n_bins: int = 15) -> float:
    """torchmetrics' binary L1 calibration error, written out: right-closed bucketize over
    linspace(0, 1, n_bins + 1); sum over bins of |mean target - mean prob| * bin fraction."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.searchsorted(edges, probs, side="right") - 1  # == torch.bucketize(right=True) - 1
    ece = 0.0
    for b in np.unique(idx):
        m = idx == b
        ece += abs(targets[m].mean() - probs[m].mean()) * m.mean()
    return float(ece)


CASES = [
    (seed, n, kind)
    for seed in (0, 1, 2)
    for n in (2, 17, 500)
    for kind in ("balanced", "imbalanced", "ties")
]


@pytest.mark.parametrize(("seed", "n", "kind"), CASES)
def test_matches_sklearn(seed: int, n: int, kind: str) -> None:
    probs, targets = _data(seed, n, kind)
    got = binary_metrics(probs, targets)
    assert list(got) == list(METRIC_NAMES)
    assert all(isinstance(v, float) for v in got.values())

    p, t = probs.numpy(), targets.numpy()
    expected = {"log_loss": skm.log_loss(t, p, labels=[0, 1]), **_sklearn(p, t),
                "ece": _numpy_ece(p, t)}
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=TOL), name


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("n_bins", [15, 4])
def test_ece_matches_numpy_definition_and_torchmetrics_class(seed: int, n_bins: int) -> None:
    g = torch.Generator().manual_seed(seed)
    probs = torch.rand(300, generator=g, dtype=torch.float64)
    probs[:3] = torch.tensor([0.0, 1.0, 0.5])  # edges: 1.0 lands in torchmetrics' extra bin
    targets = (torch.rand(300, generator=g, dtype=torch.float64) < probs).long()
    expected = _numpy_ece(probs.numpy(), targets.numpy(), n_bins=n_bins)
    reference = BinaryCalibrationError(n_bins=n_bins, norm="l1")
    # Feed the class in batches: its state accumulates over a split like ours does.
    for chunk_p, chunk_t in zip(probs.split(64), targets.split(64), strict=True):
        reference.update(chunk_p, chunk_t)
    assert reference.compute().item() == pytest.approx(expected, abs=1e-12)
    if n_bins == 15:
        assert binary_metrics(probs, targets)["ece"] == pytest.approx(expected, abs=1e-12)


def test_float32_and_bool_and_float_targets_give_same_result() -> None:
    probs, targets = _data(0, 200, "balanced")
    base = binary_metrics(probs, targets)
    for p, t in [
        (probs.float(), targets),
        (probs, targets.bool()),
        (probs, targets.float()),
        (probs.reshape(-1, 1), targets.reshape(-1, 1)),
    ]:
        got = binary_metrics(p, t)
        for k in base:
            assert got[k] == pytest.approx(base[k], abs=1e-6), k


def test_log_loss_clamps_like_torch() -> None:
    probs = torch.tensor([0.0, 1.0, 0.3, 1.0])
    targets = torch.tensor([1, 0, 1, 1])
    expected = torch.nn.functional.binary_cross_entropy(probs, targets.float()).item()
    assert binary_metrics(probs, targets)["log_loss"] == pytest.approx(expected, rel=1e-6)
    assert math.isfinite(expected)  # 100 per confidently wrong sample, not inf


def test_threshold_is_inclusive_like_model_predict() -> None:
    probs = torch.tensor([0.5, 0.5, 0.2, 0.8])
    targets = torch.tensor([1, 1, 0, 1])
    assert binary_metrics(probs, targets)["accuracy"] == 1.0


@pytest.mark.parametrize("cls", [0, 1])
def test_single_class_targets_give_nan_ranking_metrics(cls: int) -> None:
    probs = torch.tensor([0.2, 0.7, 0.4])
    targets = torch.full((3,), cls)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no torchmetrics warnings leak out
        got = binary_metrics(probs, targets)
    assert math.isnan(got["roc_auc"]) and math.isnan(got["average_precision"])
    for k in ("log_loss", "accuracy", "precision", "recall", "f1", "brier", "ece"):
        assert math.isfinite(got[k]), k
    if cls == 0:  # no positive targets: recall and f1 are 0 (zero_division=0)
        assert got["recall"] == 0.0 and got["f1"] == 0.0


def test_no_positive_predictions_gives_zero_precision() -> None:
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4])
    targets = torch.tensor([0, 1, 0, 1])
    got = binary_metrics(probs, targets)
    assert got["precision"] == 0.0 and got["recall"] == 0.0 and got["f1"] == 0.0
    assert got["precision"] == skm.precision_score(targets, [0, 0, 0, 0], zero_division=0)


def test_single_sample() -> None:
    got = binary_metrics(torch.tensor([0.9]), torch.tensor([1]))
    assert got["accuracy"] == 1.0 and math.isnan(got["roc_auc"])


@pytest.mark.parametrize(
    ("probs", "targets", "match"),
    [
        (torch.tensor([0.2, 1.3]), torch.tensor([0, 1]), r"\[0, 1\]"),  # logits, not probs
        (torch.tensor([-0.1, 0.3]), torch.tensor([0, 1]), r"\[0, 1\]"),
        (torch.tensor([float("nan"), 0.3]), torch.tensor([0, 1]), "NaN"),
        (torch.tensor([0.2, 0.3]), torch.tensor([0, 2]), "binary"),
        (torch.tensor([0.2, 0.3]), torch.tensor([0.0, 0.5]), "binary"),
        (torch.tensor([0.2, 0.3]), torch.tensor([0, 1, 1]), "same shape"),
        (torch.tensor([0.2, 0.3]), torch.tensor([[0, 1]]), "same shape"),
        (torch.tensor([]), torch.tensor([]), "empty"),
        (torch.tensor([0, 1]), torch.tensor([0, 1]), "floating"),
    ],
)
def test_bad_input(probs: torch.Tensor, targets: torch.Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        binary_metrics(probs, targets)


def test_format_metrics_table() -> None:
    table = format_metrics_table({"log_loss": 0.123456, "average_precision": 1.0, "x": math.nan})
    lines = table.splitlines()
    assert lines[0].split() == ["metric", "value"]
    assert lines[2].split() == ["log_loss", "0.1235"]
    assert lines[4].split() == ["x", "nan"]
    assert len({len(line) for line in lines}) == 1  # right-aligned values: equal widths


def _sklearn(p: np.ndarray, t: np.ndarray) -> dict[str, float]:
    labels = (p >= 0.5).astype(int)
    return {
        "accuracy": skm.accuracy_score(t, labels),
        "precision": skm.precision_score(t, labels, zero_division=0),
        "recall": skm.recall_score(t, labels, zero_division=0),
        "f1": skm.f1_score(t, labels, zero_division=0),
        "roc_auc": skm.roc_auc_score(t, p),
        "average_precision": skm.average_precision_score(t, p),
        "brier": skm.brier_score_loss(t, p),
    }


def _torchmetrics(probs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """torchmetrics' functions on the same inputs; labels thresholded with >= as ours (an
    integer tensor is taken as labels), ranking metrics on the float64 scores."""
    labels = (probs >= 0.5).long()
    values = {
        "accuracy": tmf.binary_accuracy(labels, targets),
        "precision": tmf.binary_precision(labels, targets, zero_division=0),
        "recall": tmf.binary_recall(labels, targets, zero_division=0),
        "f1": tmf.binary_f1_score(labels, targets, zero_division=0),
        "roc_auc": tmf.binary_auroc(probs, targets),
        "average_precision": tmf.binary_average_precision(probs, targets),
        "ece": tmf.binary_calibration_error(probs, targets, n_bins=15, norm="l1"),
    }
    return {k: float(v) for k, v in values.items()}


# torchmetrics returns its label metrics in float32 (0.4 comes back as 0.4000000059604645)
TM_TOL = 1e-7


@pytest.mark.parametrize(("seed", "n", "kind"), CASES)
def test_matches_torchmetrics(seed: int, n: int, kind: str) -> None:
    probs, targets = _data(seed, n, kind)
    got = binary_metrics(probs, targets)
    for name, value in _torchmetrics(probs, targets).items():
        assert got[name] == pytest.approx(value, abs=TOL), name


@pytest.mark.parametrize("value", [0.0, 0.3, 0.5, 1.0])
def test_all_equal_scores_match_both(value: float) -> None:
    """One threshold: the ROC curve is the diagonal (AUC 0.5), precision is the base rate."""
    targets = torch.tensor([0, 1, 1, 0, 1, 0, 0, 1, 1, 1])
    probs = torch.full((10,), value, dtype=torch.float64)
    got = binary_metrics(probs, targets)
    assert got["roc_auc"] == 0.5 and got["average_precision"] == pytest.approx(0.6)
    for k, v in _sklearn(probs.numpy(), targets.numpy()).items():
        assert got[k] == pytest.approx(v, abs=1e-12), k
    for k, v in _torchmetrics(probs, targets).items():
        assert got[k] == pytest.approx(v, abs=TM_TOL), k


@pytest.mark.parametrize("cls", [0, 1])
def test_one_class_label_metrics_and_ece_match_both(cls: int) -> None:
    """With one class the ranking metrics are nan (tested above); the rest agree with both."""
    g = torch.Generator().manual_seed(cls)
    probs = torch.rand(50, generator=g, dtype=torch.float64)
    targets = torch.full((50,), cls)
    got = binary_metrics(probs, targets)
    sk = _sklearn_labels_only(probs.numpy(), targets.numpy())
    with warnings.catch_warnings():  # torchmetrics: "No negative samples in targets, ..."
        warnings.simplefilter("ignore")
        tm = _torchmetrics(probs, targets)
    for k, v in sk.items():
        assert got[k] == pytest.approx(v, abs=1e-12), k
    for k in ("accuracy", "precision", "recall", "f1", "ece"):
        assert got[k] == pytest.approx(tm[k], abs=TM_TOL), k


def _sklearn_labels_only(p: np.ndarray, t: np.ndarray) -> dict[str, float]:
    labels = (p >= 0.5).astype(int)
    return {"accuracy": skm.accuracy_score(t, labels),
            "precision": skm.precision_score(t, labels, zero_division=0),
            "recall": skm.recall_score(t, labels, zero_division=0),
            "f1": skm.f1_score(t, labels, zero_division=0),
            "brier": skm.brier_score_loss(t, p)}


def _large(device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """100k rows, scores rounded to 3 decimals: thousands of ties, long tie groups."""
    probs, targets = _data(7, 100_000, "balanced")
    return (probs * 1000).round().div(1000).to(device), targets.to(device)


def _check_large(probs: torch.Tensor, targets: torch.Tensor) -> None:
    got = binary_metrics(probs, targets)
    p, t = probs.cpu().numpy(), targets.cpu().numpy()
    for k, v in _sklearn(p, t).items():  # float64 sums over 1e5 rows in another order
        assert got[k] == pytest.approx(v, abs=1e-10), k
    for k, v in _torchmetrics(probs.cpu(), targets.cpu()).items():
        assert got[k] == pytest.approx(v, abs=TM_TOL), k
    assert got["ece"] == pytest.approx(_numpy_ece(p, t), abs=1e-10)


def test_large_split_with_ties_matches_both() -> None:
    _check_large(*_large("cpu"))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_large_split_with_ties_matches_both() -> None:
    _check_large(*_large("cuda"))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    probs, targets = _data(0, 1000, "ties")
    cpu = binary_metrics(probs, targets)
    gpu = binary_metrics(probs.cuda(), targets.cuda())
    for k in cpu:
        # Every metric is float64 on both devices; only the order of the sums differs (CUDA
        # reduces in a tree): ~1e-16 relative. The 1e-9 once here failed on a GPU with
        # torchmetrics' ROC AUC, summed in float32 there (0.97316670 vs 0.97316664).
        assert gpu[k] == pytest.approx(cpu[k], abs=1e-12), k
