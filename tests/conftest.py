import pytest
import torch


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        # The marker itself: "cuda" in item.keywords also matches a parameter id such as
        # test_x[cuda], which would skip a test that needs no GPU at all.
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)
