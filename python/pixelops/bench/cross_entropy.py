"""Benchmark cases of pixelops.cross_entropy against F.cross_entropy: float32 logits, class-index targets,
reduction 'mean'; forward alone and forward + backward (the suite's figure)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

import pixelops

from .case import Case, rel_error

SUITE = {  # name: (GPU shape, CPU shape)
    "imagenet": ((8192, 1000), (2048, 1000)),
    "vocab32k": ((4096, 32000), (512, 32000)),
    "pixel256": ((64, 256, 28, 28), (16, 256, 28, 28)),
}


def _setup(shape, device):
    def setup():
        x = torch.randn(shape, device=device)
        t = torch.randint(0, shape[1], shape[:1] + shape[2:], device=device)
        return x, t
    return setup


def _fwd(f):
    def go(args):
        x, t = args
        return f(x, t)
    return go


def _fwd_bwd(f):
    def go(args):
        x, t = args
        x.requires_grad_(True)
        try:
            return torch.autograd.grad(f(x, t), x)[0]
        finally:
            x.requires_grad_(False)
    return go


def _peak_extra_mb(fn, args):
    """Device memory above what was allocated before one call of fn (MB)."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    out = fn(args)
    torch.cuda.synchronize()
    del out
    return (torch.cuda.max_memory_allocated() - base) / 1e6


def _cases_for(name, shape, device):
    numel = 1
    for d in shape:
        numel *= d
    label = "x".join(map(str, shape))
    logits_mb = numel * 4 / 1e6

    def fwd_error(args):
        x, t = args
        return rel_error(pixelops.cross_entropy(x, t), F.cross_entropy(x.double(), t))

    fwd = Case("cross_entropy", f"{name} fwd", label, device, _setup(shape, device), _fwd(F.cross_entropy),
               _fwd(pixelops.cross_entropy), fwd_error, bytes=numel * 4, ceiling="copy")

    notes = {}

    def fwd_bwd_error(args):
        x, t = args
        xr = x.double().requires_grad_()
        ref = torch.autograd.grad(F.cross_entropy(xr, t), xr)[0]
        err = rel_error(_fwd_bwd(pixelops.cross_entropy)(args), ref)
        if device == "cuda":  # measured here, once, outside the timed calls
            ours = _peak_extra_mb(_fwd_bwd(pixelops.cross_entropy), args)
            theirs = _peak_extra_mb(_fwd_bwd(F.cross_entropy), args)
            notes.update(peak_extra_mb=round(ours, 1), peak_extra_x_logits=round(ours / logits_mb, 2),
                         torch_peak_extra_mb=round(theirs, 1), torch_peak_extra_x_logits=round(theirs / logits_mb, 2))
        return err

    # the floor: read the logits once, write the gradient once
    fwd_bwd = Case("cross_entropy", f"{name} fwd+bwd", label, device, _setup(shape, device),
                   _fwd_bwd(F.cross_entropy), _fwd_bwd(pixelops.cross_entropy), fwd_bwd_error,
                   bytes=2 * numel * 4, ceiling="copy", notes=notes)
    return [fwd, fwd_bwd]


def cases(device):
    out = []
    for name, (gpu_shape, cpu_shape) in SUITE.items():
        out.extend(_cases_for(name, gpu_shape if device == "cuda" else cpu_shape, device))
    return out
