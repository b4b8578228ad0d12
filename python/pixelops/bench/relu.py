"""Benchmark cases of pixelops.relu against torch.relu."""
from __future__ import annotations

import torch

import pixelops

from .case import Case, rel_error


def _fwd_case(n, device, **kw):
    def setup():
        return torch.randn(n, device=device)

    def error(x):
        return rel_error(pixelops.relu(x), torch.relu(x.double()))

    return Case("relu", "fwd", f"{n:,}", device, setup, torch.relu, pixelops.relu, error,
                bytes=2 * n * 4, ceiling="copy", **kw)


def _fwd_bwd_case(n, device):
    def setup():
        x = torch.randn(n, device=device, requires_grad=True)
        return x, torch.randn(n, device=device)

    def run(f):
        def go(args):
            x, g = args
            return torch.autograd.grad(f(x), x, g)[0]
        return go

    def error(args):
        x, g = args
        ref = torch.autograd.grad(torch.relu(x.double()), x, g.double())[0]
        return rel_error(run(pixelops.relu)(args), ref)

    # forward reads x, writes y; backward reads y and grad, writes grad_x
    return Case("relu", "fwd+bwd", f"{n:,}", device, setup, run(torch.relu), run(pixelops.relu), error,
                bytes=5 * n * 4)


def cases(device):
    sizes = [1 << 20, 1 << 26] if device == "cuda" else [1 << 16, 1 << 24]
    out = []
    for n in sizes:
        out.append(_fwd_case(n, device))
        out.append(_fwd_bwd_case(n, device))
    overhead = _fwd_case(4096, device, host_bound=True, flush_cache=False)
    overhead.name = "per-call"
    overhead.ceiling = None
    out.append(overhead)
    return out
