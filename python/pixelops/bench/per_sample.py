"""Per-sample gradients (torch.func.vmap over torch.func.grad, the DP-SGD recipe) of a conv layer, pixelops'
conv2d / masked_conv2d against F.conv2d under the same transforms. Under vmap both run the layer as one conv
with the examples as its images, and the weight gradient as a grouped conv with one group per example.
(--ops per_sample; the CPU runs an eighth of the batch.)"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import grad, vmap

import pixelops

from ..ops.conv2d import mask_taps
from .case import Case, rel_error

# name: (examples, Cin, Cout, H=W, k, mask type or None), layers of the conv2d suite
SHAPES = {
    "mnist_c2": (256, 32, 64, 28, 3, None),
    "pcnn_maskB": (64, 64, 64, 28, 3, "B"),
}


def per_sample_grads(conv):
    """(examples, weight, bias) -> each example's gradients of sum(conv(example)^2), stacked."""
    def loss(w, b, x):
        return conv(x[None], w, b).square().sum()
    return lambda a: vmap(grad(loss, argnums=(0, 1)), in_dims=(None, None, 0))(a[1], a[2], a[0])


def _cases(name, spec, device):
    n, cin, cout, hw, k, mask_type = spec
    if device == "cpu":
        n //= 8
    taps = k * k if mask_type is None else mask_taps(k, mask_type)
    if mask_type is None:
        ours = per_sample_grads(lambda x, w, b: pixelops.conv2d(x, w, b, padding=k // 2))
        theirs = per_sample_grads(lambda x, w, b: F.conv2d(x, w, b, padding=k // 2))
    else:
        mask = {}

        def masked(x, w, b):  # what PyTorch users run: the dense conv of the masked weights
            m = mask.get((w.device, w.dtype))
            if m is None:
                m = mask[(w.device, w.dtype)] = pixelops.conv_mask(k, mask_type, dtype=w.dtype, device=w.device)
            return F.conv2d(x, w * m, b, padding=k // 2)

        ours = per_sample_grads(lambda x, w, b: pixelops.masked_conv2d(x, w, b, mask_type))
        theirs = per_sample_grads(masked)

    def setup():
        g = torch.Generator().manual_seed(0)
        x = torch.randn(n, cin, hw, hw, generator=g).to(device)
        w = (torch.randn(cout, cin, k, k, generator=g) / (cin * k * k) ** 0.5).to(device)
        return x, w, torch.randn(cout, generator=g).to(device)

    def error(args):
        return max(rel_error(o, r) for o, r in zip(ours(args), theirs([a.double() for a in args])))

    shape = f"{n}x{cin}>{cout} {hw}^2 k{k}" + (f" mask{mask_type}" if mask_type else "")
    flops = 2 * 2 * n * cout * hw * hw * cin * taps  # the forward and the weight gradient
    return [Case("per_sample", "grads", shape, device, setup, theirs, ours, error, flops=flops, flush_cache=False,
                 notes=dict(suite=name, masked=mask_type or ""))]


def cases(device):
    out = []
    for name, spec in SHAPES.items():
        out.extend(_cases(name, spec, device))
    return out
