"""pytest-benchmark comparisons of pixelops against PyTorch (not part of the test suite; run with
`pytest benchmarks`). Each op's file times both sides on the same inputs, grouped by shape."""
import pytest
import torch

import pixelops

DEVICES = ["cpu"] + (["cuda"] if pixelops.available_backends()["cuda"] else [])


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param
