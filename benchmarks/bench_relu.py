"""ReLU: pixelops against torch, forward and forward+backward (pytest benchmarks/bench_relu.py)."""
import pytest
import torch

import pixelops
from conftest import sync

IMPLS = {"torch": torch.relu, "pixelops": pixelops.relu}


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("n", [4096, 1 << 16, 1 << 22])
def test_relu_forward(benchmark, device, impl, n):
    benchmark.group = f"relu fwd {n} {device}"
    x = torch.randn(n, device=device)
    f = IMPLS[impl]

    def run():
        f(x)
        sync(device)

    benchmark(run)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("n", [1 << 16, 1 << 22])
def test_relu_forward_backward(benchmark, device, impl, n):
    benchmark.group = f"relu fwd+bwd {n} {device}"
    x = torch.randn(n, device=device, requires_grad=True)
    g = torch.randn(n, device=device)
    f = IMPLS[impl]

    def run():
        torch.autograd.grad(f(x), x, g)
        sync(device)

    benchmark(run)
