"""conv2d / masked_conv2d: pixelops against torch on the suite of shared/anchors.md, forward and
forward+backward (pytest benchmarks/bench_conv2d.py). Masked shapes time torch as F.conv2d(x, w * mask)."""
import pytest
import torch
import torch.nn.functional as F

import pixelops
from conftest import sync
from pixelops.bench.conv2d import SUITE


def _impl(impl, stride, pad, mask_type, k, device):
    if impl == "pixelops":
        if mask_type:
            return lambda x, w, b: pixelops.masked_conv2d(x, w, b, mask_type, stride, pad)
        return lambda x, w, b: pixelops.conv2d(x, w, b, stride, pad)
    if mask_type:
        mask = pixelops.conv_mask(k, mask_type, device=device)
        return lambda x, w, b: F.conv2d(x, w * mask, b, stride, pad)
    return lambda x, w, b: F.conv2d(x, w, b, stride, pad)


def _inputs(name, device, grad):
    n, cin, cout, hw, k, stride, pad, mask_type = SUITE[name]
    if device == "cpu":
        n //= 8
    x = torch.randn(n, cin, hw, hw, device=device, requires_grad=grad)
    w = torch.randn(cout, cin, k, k, device=device, requires_grad=grad)
    b = torch.randn(cout, device=device, requires_grad=grad)
    return (x, w, b), (stride, pad, mask_type, k)


@pytest.mark.parametrize("impl", ["torch", "pixelops"])
@pytest.mark.parametrize("name", list(SUITE))
def test_conv2d_forward(benchmark, device, impl, name):
    benchmark.group = f"conv2d fwd {name} {device}"
    args, (stride, pad, mask_type, k) = _inputs(name, device, False)
    f = _impl(impl, stride, pad, mask_type, k, device)

    def run():
        f(*args)
        sync(device)

    benchmark(run)


@pytest.mark.parametrize("impl", ["torch", "pixelops"])
@pytest.mark.parametrize("name", list(SUITE))
def test_conv2d_forward_backward(benchmark, device, impl, name):
    benchmark.group = f"conv2d fwd+bwd {name} {device}"
    args, (stride, pad, mask_type, k) = _inputs(name, device, True)
    f = _impl(impl, stride, pad, mask_type, k, device)
    g = torch.randn_like(f(*args))

    def run():
        torch.autograd.grad(f(*args), args, g)
        sync(device)

    benchmark(run)
