"""Shared test setup: CUDA tests (marked `cuda`) skip cleanly where no GPU or no CUDA build is present."""
import pytest

import pixelops

HAS_CUDA = pixelops.available_backends()["cuda"]


def pytest_collection_modifyitems(config, items):
    if HAS_CUDA:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU and a pixelops build with CUDA kernels")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
