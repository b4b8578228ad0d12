"""Benchmark cases of pixelops.conv2d / masked_conv2d against F.conv2d (the suite of shared/anchors.md).

Masked rows hold pixelops' masked conv (masked taps skipped) against what PyTorch users run,
F.conv2d(x, w * mask); their TFLOP/s count the work actually needed (active taps only). fwd+bwd computes the
gradients of input, weight and bias. The CPU runs each shape with an eighth of the batch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

import pixelops

from ..ops.conv2d import mask_taps
from .case import Case, rel_error

# name: (N, Cin, Cout, H=W, k, stride, pad, mask type or None)
SUITE = {
    "mnist_c1": (256, 1, 32, 28, 3, 1, 1, None),
    "mnist_c2": (256, 32, 64, 28, 3, 1, 1, None),
    "pcnn_maskA": (64, 1, 64, 28, 7, 1, 3, "A"),
    "pcnn_maskB": (64, 64, 64, 28, 3, 1, 1, "B"),
    "res_3x3": (32, 64, 64, 56, 3, 1, 1, None),
    "res_s2": (32, 64, 128, 56, 3, 2, 1, None),
    "res_1x1": (32, 256, 64, 56, 1, 1, 0, None),
}


def _fns(stride, pad, mask_type):
    """(torch's way, pixelops' way) of the forward, each taking (x, w, b)."""
    if mask_type is None:
        return (lambda x, w, b: F.conv2d(x, w, b, stride, pad),
                lambda x, w, b: pixelops.conv2d(x, w, b, stride, pad))
    mask = {}

    def torch_fn(x, w, b):
        m = mask.get((w.device, w.dtype))
        if m is None:
            m = mask[(w.device, w.dtype)] = pixelops.conv_mask(w.shape[-2:], mask_type, dtype=w.dtype, device=w.device)
        return F.conv2d(x, w * m, b, stride, pad)

    return torch_fn, lambda x, w, b: pixelops.masked_conv2d(x, w, b, mask_type, stride, pad)


def _cases(name, spec, device):
    n, cin, cout, hw, k, stride, pad, mask_type = spec
    if device == "cpu":
        n //= 8
    out = (hw + 2 * pad - k) // stride + 1
    taps = k * k if mask_type is None else mask_taps(k, mask_type)
    flops = 2 * n * cout * out * out * cin * taps
    shape = (f"{n}x{cin}>{cout} {hw}^2 k{k}" + (f" s{stride}" if stride > 1 else "")
             + (f" mask{mask_type}" if mask_type else ""))
    torch_fn, ours_fn = _fns(stride, pad, mask_type)

    def setup(grad=False):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(n, cin, hw, hw, generator=g).to(device)
        w = (torch.randn(cout, cin, k, k, generator=g) / (cin * k * k) ** 0.5).to(device)
        b = torch.randn(cout, generator=g).to(device)
        if grad:
            x, w, b = (t.requires_grad_() for t in (x, w, b))
            return x, w, b, torch.randn(n, cout, out, out, generator=g).to(device)
        return x, w, b

    def fwd_error(args):
        x, w, b = args
        return rel_error(ours_fn(x, w, b), torch_fn(x.double(), w.double(), b.double()))

    def both(f):
        def go(args):
            x, w, b, g = args
            return torch.autograd.grad(f(x, w, b), (x, w, b), g)
        return go

    def bwd_error(args):
        x, w, b, g = args
        ours = both(ours_fn)(args)
        leaves = [t.detach().double().requires_grad_() for t in (x, w, b)]
        ref = torch.autograd.grad(torch_fn(*leaves), leaves, g.double())
        return max(rel_error(o, r) for o, r in zip(ours, ref))

    # one suite, "conv2d" (the --ops name); the masked shapes say so in the shape and the notes.
    # On CUDA each shape runs with TF32 off and on (cuDNN and pixelops both follow cudnn.allow_tf32).
    op = "conv2d"
    rows = []
    for tf32 in ((False, True) if device == "cuda" else (None,)):
        tag = "" if tf32 is None else (" tf32" if tf32 else " fp32")
        notes = dict(suite=name, masked=mask_type or "", **({} if tf32 is None else {"tf32": tf32}))
        rows += [
            Case(op, "fwd" + tag, shape, device, setup, lambda a: torch_fn(*a), lambda a: ours_fn(*a), fwd_error,
                 flops=flops, flush_cache=False, notes=notes, tf32=tf32),
            Case(op, "fwd+bwd" + tag, shape, device, lambda: setup(True), both(torch_fn), both(ours_fn), bwd_error,
                 flops=3 * flops, flush_cache=False, notes=notes, tf32=tf32),
        ]
    return rows


def cases(device):
    out = []
    for name, spec in SUITE.items():
        out.extend(_cases(name, spec, device))
    return out
