"""The functionals that pixelops.nn's modules and pixelops.patch() call: pixelops' ops with the few
adaptations a drop-in needs to take whatever torch.nn.functional takes where pixelops can run it.

`runs_on_pixelops(...)` says whether pixelops has kernels for the tensors' dtype and device; patch() sends
everything else to torch's own functional, unchanged.
"""
from __future__ import annotations

import torch

import pixelops
from .._arrays import MAX_DIMS

_CPU_FLOATS = (torch.float32, torch.float64)
_CUDA_FLOATS = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
_LOW = (torch.float16, torch.bfloat16)


def kernel_dtypes(device_type: str) -> tuple:
    return _CPU_FLOATS if device_type == "cpu" else _CUDA_FLOATS if device_type == "cuda" else ()


def runs_on_pixelops(*tensors, half_on_cpu=False) -> bool:
    """True when every given tensor (None skipped) is a plain dense tensor of at most MAX_DIMS dimensions on
    cpu/cuda whose dtype pixelops has kernels for; with `half_on_cpu` (a bool, or a callable asked only when it
    matters), also float16 and bfloat16 on the CPU, which the op computes in float32 (ReLU always; conv and
    cross-entropy under CPU autocast). Runs on every patched call: attribute reads only, .device is slower."""
    for t in tensors:
        if t is None:
            continue
        if not isinstance(t, torch.Tensor) or t.layout != torch.strided or t.ndim > MAX_DIMS:
            return False
        if t.is_cpu:
            if t.dtype in _CPU_FLOATS:
                continue
            if t.dtype in _LOW and (half_on_cpu() if callable(half_on_cpu) else half_on_cpu):
                continue
            return False
        if not (t.is_cuda and t.dtype in _CUDA_FLOATS):
            return False
    return True


def relu(input, inplace: bool = False):
    return pixelops.relu(input, inplace)  # (CPU float16/bfloat16 too: the op computes them in float32)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, activation=None):
    return pixelops.conv2d(input, weight, bias, stride, padding, dilation, groups, activation=activation)


def masked_conv2d(input, weight, bias=None, mask_type="B", stride=1, padding="same", dilation=1, groups=1, *,
                  activation=None):
    return pixelops.masked_conv2d(input, weight, bias, mask_type, stride, padding, dilation, groups,
                                  activation=activation)


def cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
                  reduction="mean", label_smoothing=0.0):
    if size_average is not None or reduce is not None:  # torch's deprecated spelling of `reduction`
        reduction = torch.nn._reduction.legacy_get_string(size_average, reduce)
    if input.dtype in _LOW and input.is_cpu and not torch.is_autocast_enabled("cpu"):
        # No half kernels on the CPU (a bfloat16 model's logits): in float32, as torch accumulates them, the loss
        # rounded back to torch's dtype for it: the logits', or the one class probabilities of another dtype
        # promote it to (float64 probabilities, taken as they are: a float64 loss). (Under autocast the op's own
        # policy takes them: a float32 loss.)
        def up(t):
            return t.float() if t is not None and t.is_floating_point() else t
        out = torch.promote_types(input.dtype, target.dtype) if target.is_floating_point() else input.dtype
        return pixelops.cross_entropy(up(input), target.float() if target.dtype in _LOW else target,
                                      weight=up(weight), ignore_index=ignore_index, reduction=reduction,
                                      label_smoothing=label_smoothing).to(out)
    return pixelops.cross_entropy(input, target, weight=weight, ignore_index=ignore_index, reduction=reduction,
                                  label_smoothing=label_smoothing)
