"""logreg_torch/histograms.py: the buckets torch's add_histogram would write, to the last count."""

import numpy as np
import pytest
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import make_histogram

from logreg_torch.histograms import buckets


@pytest.fixture(scope="module")
def edges(tmp_path_factory) -> np.ndarray:
    writer = SummaryWriter(tmp_path_factory.mktemp("tb"))
    writer.close()
    return np.asarray(writer.default_bins)


def _cases(edges: np.ndarray) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    on_edges = edges[rng.integers(0, len(edges), 50)]
    return [rng.normal(size=640), rng.normal(scale=1e-3, size=17), np.array([0.25]),
            np.zeros(33), np.full(5, -7.0), on_edges, np.array([edges[0], edges[-1]]),
            np.concatenate([on_edges, rng.uniform(-1e6, 1e6, 100)]), rng.normal(size=3) * 1e-13]


def test_buckets_equal_torchs_make_histogram(edges) -> None:
    for values in _cases(edges):
        proto = make_histogram(values, edges)
        limits, counts = buckets(values, edges)
        assert limits == list(proto.bucket_limit)
        assert counts == [int(c) for c in proto.bucket]


def test_a_run_writes_the_same_histograms_as_add_histogram(tmp_path, edges) -> None:
    from tensorboard.backend.event_processing import event_accumulator as ea

    values = np.random.default_rng(1).normal(size=200)
    for name, raw in (("torch", False), ("ours", True)):
        with SummaryWriter(tmp_path / name) as writer:
            if raw:
                limits, counts = buckets(values, edges)
                writer.add_histogram_raw("w", values.min(), values.max(), len(values),
                                         values.sum(), values.dot(values), limits, counts, 3)
            else:
                writer.add_histogram("w", values, 3)
    protos = [ea.EventAccumulator(str(tmp_path / n), size_guidance={ea.HISTOGRAMS: 0}).Reload()
              .Histograms("w")[0].histogram_value for n in ("torch", "ours")]
    assert protos[0] == protos[1]
