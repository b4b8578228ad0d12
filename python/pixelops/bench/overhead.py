"""Eager per-call overhead of each op on small tensors, pixelops against torch (host clock, many calls back
to back): what a model of small layers pays per call beyond the arithmetic."""
from __future__ import annotations

import torch
import torch.nn.functional as F

import pixelops

from .case import Case, rel_error
from .per_sample import per_sample_grads


def _case(name, shape, device, make, torch_fn, ours_fn, ref_fn):
    def error(args):
        return rel_error(ours_fn(args), ref_fn(args))

    return Case("overhead", name, shape, device, make, torch_fn, ours_fn, error, host_bound=True,
                flush_cache=False)


def _fwd_bwd(f):
    def go(args):
        leaves = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
        out = f(args)
        return torch.autograd.grad(out, leaves[0], torch.ones_like(out))[0]
    return go


def cases(device):
    def relu_args():
        return (torch.randn(8, 16, device=device, requires_grad=True),)

    def conv_args():
        return (torch.randn(2, 4, 8, 8, device=device, requires_grad=True),
                torch.randn(8, 4, 3, 3, device=device, requires_grad=True),
                torch.randn(8, device=device, requires_grad=True))

    def ce_args():
        return (torch.randn(8, 10, device=device, requires_grad=True), torch.randint(0, 10, (8,), device=device))

    nograd = lambda make: (lambda: tuple(a.detach() for a in make()))  # noqa: E731
    relu_t, relu_o = (lambda a: torch.relu(a[0])), (lambda a: pixelops.relu(a[0]))
    conv_t = lambda a: F.conv2d(a[0], a[1], a[2], padding=1)  # noqa: E731
    conv_o = lambda a: pixelops.conv2d(a[0], a[1], a[2], padding=1)  # noqa: E731
    ce_t, ce_o = (lambda a: F.cross_entropy(a[0], a[1])), (lambda a: pixelops.cross_entropy(a[0], a[1]))
    ref_relu = lambda a: torch.relu(a[0].double())  # noqa: E731
    ref_conv = lambda a: F.conv2d(a[0].double(), a[1].double(), a[2].double(), padding=1)  # noqa: E731
    ref_ce = lambda a: F.cross_entropy(a[0].double(), a[1])  # noqa: E731
    out = []
    for op, shape, make, t, o, ref in (("relu", "8x16", relu_args, relu_t, relu_o, ref_relu),
                                       ("conv2d", "2x4x8x8, 8x4x3x3", conv_args, conv_t, conv_o, ref_conv),
                                       ("cross_entropy", "8x10", ce_args, ce_t, ce_o, ref_ce)):
        out.append(_case(f"{op} fwd", shape, device, nograd(make), t, o, ref))
        out.append(_case(f"{op} f+b", shape, device, make, _fwd_bwd(t), _fwd_bwd(o), _fwd_bwd(ref)))
    # per-sample gradients, vmap(grad(...)): torch.func's machinery around pixelops' autograd.Functions, where
    # F.conv2d has C++ rules (bench/per_sample.py times the suite's layers this way)
    per_sample_t = per_sample_grads(lambda x, w, b: F.conv2d(x, w, b, padding=1))
    per_sample_o = per_sample_grads(lambda x, w, b: pixelops.conv2d(x, w, b, padding=1))

    def per_sample_error(args):
        return max(rel_error(g, r) for g, r in zip(per_sample_o(args), per_sample_t([a.double() for a in args])))

    out.append(Case("overhead", "conv2d per-sample", "2x4x8x8, 8x4x3x3", device, nograd(conv_args), per_sample_t,
                    per_sample_o, per_sample_error, host_bound=True, flush_cache=False))
    return out
