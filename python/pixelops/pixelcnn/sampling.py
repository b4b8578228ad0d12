"""PixelCNN samplers: argument checks, the naive loop (the reference) and the fused kernels.

Both draw pixel i of image b with the uniform u(seed, b, i) of csrc/common/random.h (Philox-4x32-10) by the
inverse CDF of softmax(logits / temperature) computed in float64, so one seed gives the same images from
either sampler except where rounding puts a uniform on a boundary between two levels. A pixel whose softmax is
undefined (a NaN or +inf logit, or every logit -inf) draws -1 in both, and sample() raises.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .. import _C
from .._arrays import ABSENT, as_int, stream, view
from . import pack
from .model import capturing

METHODS = ("auto", "naive", "fused")


def uniforms(n: int, pixels: int, seed: int, device) -> torch.Tensor:
    """(n, pixels) float32 uniforms in [0, 1), the same bits on CPU and CUDA."""
    u = torch.empty(n, pixels, dtype=torch.float32, device=device)
    _C.pixel_uniforms(view(u), seed, stream(u))
    return u


def draw(logits: torch.Tensor, u: torch.Tensor, temperature: float) -> torch.Tensor:
    """Level indices (n,) drawn from logits (n, levels) with uniforms u (n,): the first level whose cumulative
    softmax weight exceeds u times the total (inverse_cdf_draw in csrc/common/pixelcnn_plan.h).

    The total is NaN exactly where softmax is undefined: a NaN logit, a +inf one (inf - inf) or all -inf
    (-inf - -inf). There is nothing to draw from, so those rows get -1, as in the kernels (the comparisons
    alone would give 0 here and levels - 1 there), and sample() raises."""
    lg = logits.double()
    e = torch.exp((lg - lg.max(1, keepdim=True).values) * (1.0 / temperature))
    cum = torch.cumsum(e, 1)
    total = cum[:, -1]
    k = (cum <= (u.double() * total)[:, None]).sum(1).clamp_(max=logits.shape[1] - 1)
    return k.masked_fill_(torch.isnan(total), -1)


# ---- checks ------------------------------------------------------------------------------------------------
WHERE = "PixelCNN.sample"


def _check(model, n, size, temperature, seed, observed, observed_mask, method):
    """Every argument checked (numpy integers and floats taken as Python's); returns n, (H, W), temperature
    and seed as Python numbers, and the model's device."""
    device = model.first.weight.device
    if device.type not in ("cpu", "cuda"):
        # both samplers hand the model's memory to pixelops' kernels, and a meta tensor has none (a segfault)
        raise ValueError(f"{WHERE}: the model is on {device}, and pixelops runs on cpu and cuda")
    n = as_int(n, "n", WHERE)
    if n < 0:
        raise ValueError(f"{WHERE}: 'n' must be a non-negative int, got {n!r}")
    if not isinstance(size, (tuple, list)):
        raise TypeError(f"{WHERE}: 'size' must be a pair (H, W) of ints, got {size!r}")
    if len(size) != 2:
        raise ValueError(f"{WHERE}: 'size' must be (H, W), got {size!r}")
    size = tuple(as_int(s, "size", WHERE) for s in size)
    if min(size) < 1:
        raise ValueError(f"{WHERE}: 'size' must be (H, W) of positive ints, got {size!r}")
    if isinstance(temperature, (bool, np.bool_)) or not isinstance(temperature, (int, float, np.integer, np.floating)):
        raise TypeError(f"{WHERE}: 'temperature' must be a number, got {temperature!r}")
    try:
        t = float(temperature)
    except OverflowError:  # an int beyond float64's range
        t = math.inf
    # 1 / t is what the draw multiplies by: a subnormal t makes it inf
    if not (math.isfinite(t) and t > 0 and math.isfinite(1.0 / t)):
        raise ValueError(f"{WHERE}: 'temperature' must be a finite number > 0, got {temperature!r}")
    if seed is not None:
        seed = as_int(seed, "seed", WHERE)
        if not 0 <= seed < 2 ** 64:
            raise ValueError(f"{WHERE}: 'seed' must be None or an int in [0, 2**64), got {seed!r}")
    if not isinstance(method, str):
        raise TypeError(f"{WHERE}: 'method' must be one of {', '.join(map(repr, METHODS))}, got {method!r}")
    if method not in METHODS:
        raise ValueError(f"{WHERE}: 'method' must be one of {', '.join(map(repr, METHODS))}, got {method!r}")
    if (observed is None) != (observed_mask is None):
        raise ValueError(f"{WHERE}: 'observed' and 'observed_mask' go together: give both or neither")
    expected = (n, 1, size[0], size[1])
    for name, a in (("observed", observed), ("observed_mask", observed_mask)):
        if a is None:
            continue
        if not isinstance(a, torch.Tensor):
            raise TypeError(f"{WHERE}: '{name}' must be a torch tensor, got {type(a).__name__}")
        if tuple(a.shape) != expected:
            raise ValueError(f"{WHERE}: '{name}' must have shape (n, 1, H, W) = {expected}, got {tuple(a.shape)}")
        if a.device != device:
            raise ValueError(f"{WHERE}: '{name}' is on {a.device} but the model is on {device}")
        if a.is_complex():
            raise TypeError(f"{WHERE}: '{name}' must hold real numbers, got {a.dtype}")
    if observed is not None:
        # Both checked in the caller's dtype, before any cast: float32 would round a float64 1 + 1e-12 to 1.
        # Any dtype's mask holds 0s and 1s only (an int 2 is as wrong as a float 2).
        if not bool(((observed_mask == 0) | (observed_mask == 1)).all()):
            raise ValueError(f"{WHERE}: 'observed_mask' must hold 0s and 1s")
        if not bool(((observed >= 0) & (observed <= 1)).all()):  # NaN fails both comparisons
            raise ValueError(f"{WHERE}: 'observed' must hold values in [0, 1]")
    return n, size, t, seed, device


def sample(model, n, size, temperature, seed, observed, observed_mask, method):
    n, (H, W), temperature, seed, device = _check(model, n, size, temperature, seed, observed, observed_mask, method)
    if seed is None:
        seed = int(torch.randint(0, 2 ** 62, ())) * 4 + int(torch.randint(0, 4, ()))
    obs_idx = obs_mask = None
    if observed is not None:
        obs_idx = model.quantise(observed.float()).to(torch.int32).contiguous()
        obs_mask = (observed_mask[:, 0] != 0).to(torch.uint8).contiguous()
    reason = pack.unsupported(model, device)
    if method == "fused" and reason is not None:
        raise ValueError(f"PixelCNN.sample: method='fused' cannot run this model: {reason}; use method='naive'")
    fused = method == "fused" or (method == "auto" and reason is None)
    if n == 0:
        return torch.empty(0, 1, H, W, device=device, dtype=model.first.weight.dtype)
    with torch.no_grad():
        if fused:
            k, _ = run_fused(model, n, H, W, temperature, seed, obs_idx, obs_mask)
        else:
            k = naive(model, n, H, W, temperature, seed, obs_idx, obs_mask)
    # -1: a pixel with no distribution to draw from (see draw). Reading that is a host sync on CUDA, skipped while
    # a CUDA graph is captured (nothing has run yet then).
    if not capturing(k) and bool((k < 0).any()):
        raise ValueError(f"{WHERE}: the model's logits are NaN or +inf (or all -inf) at some pixel, so "
                         "softmax(logits / temperature) has no distribution to draw from (check its parameters)")
    return model.levels_to_images(k.long())


# ---- the samplers ------------------------------------------------------------------------------------------
def naive(model, n, H, W, temperature, seed, obs_idx=None, obs_mask=None, pixels=None) -> torch.Tensor:
    """The reference: the whole network once per pixel (H*W forward passes). Level indices (n, H, W).
    `pixels` stops after the first that many pixels (the benchmark times a share and scales it)."""
    device = model.first.weight.device
    u = uniforms(n, H * W, seed, device)
    k = torch.zeros(n, H, W, dtype=torch.long, device=device)
    for i in range(H * W if pixels is None else min(pixels, H * W)):
        r, c = divmod(i, W)
        fixed = None
        if obs_mask is not None:
            fixed = obs_mask[:, r, c].bool()
            if bool(fixed.all()):
                k[:, r, c] = obs_idx[:, r, c].long()
                continue
        # the public forward, so that a subclass's own forward is what gets sampled
        logits = model(model.levels_to_images(k))[:, :, r, c]
        v = draw(logits, u[:, i], temperature)
        if fixed is not None:
            v = torch.where(fixed, obs_idx[:, r, c].long(), v)
        k[:, r, c] = v
    return k


def run_fused(model, n, H, W, temperature, seed, obs_idx=None, obs_mask=None, want_logits=False):
    """pixelops' fused kernels: level indices (n, H, W) int32 and, when asked, the logits (n, levels, H, W)."""
    device = model.first.weight.device
    params = pack.params(model)
    cfg = pack.config(model)
    samples = torch.empty(n, H, W, dtype=torch.int32, device=device)
    logits = torch.empty(n, model.levels, H, W, dtype=torch.float32, device=device) if want_logits else None
    # cached activations: a ring of kernel // 2 + 1 rows per layer (ring_rows in csrc/common/pixelcnn_plan.h)
    ring = (model.kernel // 2 + 1) * W
    scratch = torch.empty(n * (model.n_layers + 1) * ring * model.channels, dtype=torch.float32, device=device)
    absent = ABSENT  # a null pointer: the kernel skips what it stands for
    _C.pixelcnn_sample(view(params), (cfg.ctypes.data, cfg.shape, (1,), 4, -1),
                       view(obs_idx) if obs_idx is not None else absent,
                       view(obs_mask) if obs_mask is not None else absent, view(samples),
                       view(logits) if logits is not None else absent, view(scratch), temperature, seed,
                       stream(params))
    return samples, logits


def fused_logits(model, x: torch.Tensor) -> torch.Tensor:
    """Teacher-forced: the fused kernels' logits (N, levels, H, W) for the given images x (N, 1, H, W), every
    pixel observed (for checking the kernels against model(x))."""
    reason = pack.unsupported(model, model.first.weight.device)
    if reason is not None:
        raise ValueError(f"fused_logits: the fused sampler cannot run this model: {reason}")
    k = model.quantise(x).to(torch.int32).contiguous()
    mask = torch.ones_like(k, dtype=torch.uint8)
    with torch.no_grad():
        _, logits = run_fused(model, x.shape[0], x.shape[2], x.shape[3], 1.0, 0, k, mask, want_logits=True)
    return logits
