"""Cross-entropy: pixelops against torch, float32 logits, class indices, mean; forward and forward+backward on
the suite's shapes (pytest benchmarks/bench_cross_entropy.py)."""
import pytest
import torch
import torch.nn.functional as F

import pixelops
from conftest import sync

IMPLS = {"torch": F.cross_entropy, "pixelops": pixelops.cross_entropy}
SHAPES = {  # name: {device: shape}, as in pixelops/bench/cross_entropy.py
    "imagenet": {"cuda": (8192, 1000), "cpu": (2048, 1000)},
    "vocab32k": {"cuda": (4096, 32000), "cpu": (512, 32000)},
    "pixel256": {"cuda": (64, 256, 28, 28), "cpu": (16, 256, 28, 28)},
}


def _inputs(name, device):
    shape = SHAPES[name][device]
    x = torch.randn(shape, device=device)
    t = torch.randint(0, shape[1], shape[:1] + shape[2:], device=device)
    return x, t


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("name", SHAPES)
def test_cross_entropy_forward(benchmark, device, impl, name):
    benchmark.group = f"cross_entropy fwd {name} {device}"
    x, t = _inputs(name, device)
    f = IMPLS[impl]

    def run():
        f(x, t)
        sync(device)

    benchmark(run)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("name", SHAPES)
def test_cross_entropy_forward_backward(benchmark, device, impl, name):
    benchmark.group = f"cross_entropy fwd+bwd {name} {device}"
    x, t = _inputs(name, device)
    x.requires_grad_()
    f = IMPLS[impl]

    def run():
        torch.autograd.grad(f(x, t), x)
        sync(device)

    benchmark(run)
