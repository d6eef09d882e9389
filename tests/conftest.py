import pytest
import torch


@pytest.fixture
def no_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    """The end-of-run matplotlib figures off: they are most of a tiny run's time, and
    tests/test_tracking_run.py covers them. A module takes it for every test with
    ``pytestmark = pytest.mark.usefixtures("no_figures")``."""
    monkeypatch.setattr("logreg_torch.tracking.figures_available", lambda: False)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        # The marker itself: "cuda" in item.keywords also matches a parameter id such as
        # test_x[cuda], which would skip a test that needs no GPU at all.
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)
