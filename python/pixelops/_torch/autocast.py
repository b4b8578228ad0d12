"""PyTorch's autocast policy, applied to pixelops' ops in one place.

Under torch.autocast, torch runs convolutions in the autocast dtype (float16 or bfloat16) and cross-entropy in
float32; pixelops does the same. The dispatcher cannot do it for us on the eager path (that path never enters
the dispatcher), so each op's torch entry calls one of these before choosing a path; on the compiled path the
casts are traced into the graph like any other tensor op.

pixelops has no float16/bfloat16 kernels on the CPU: there a "low precision" convolution reads its inputs
rounded to the autocast dtype, accumulates in float32 and rounds its output, which is what oneDNN does.
"""
from __future__ import annotations

import torch

_any_autocast = torch._C._is_any_autocast_enabled
LOW_PRECISION = (torch.float16, torch.bfloat16)


def _cast(t, dtype):
    # As autocast's own eligibility rule: floating tensors other than float64 are cast.
    if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.dtype == dtype or t.dtype == torch.float64:
        return t
    return t.to(dtype)


def low_precision(*tensors):
    """Autocast's "lower precision" rule (convolutions). Returns (tensors cast for the kernel, output dtype
    or None). The first tensor's device decides. Without autocast: (tensors unchanged, None)."""
    if not _any_autocast():
        return tensors, None
    device = tensors[0].device.type
    if not torch.is_autocast_enabled(device) or tensors[0].dtype == torch.float64 or tensors[0].is_complex():
        return tensors, None
    low = torch.get_autocast_dtype(device)
    cast = tuple(_cast(t, low) for t in tensors)
    if device == "cpu":
        return tuple(_cast(t, torch.float32) for t in cast), low
    return cast, None


def float32(*tensors):
    """Autocast's "float32" rule (cross-entropy): floating inputs in float32 when autocast is on."""
    if not _any_autocast():
        return tensors
    if not torch.is_autocast_enabled(tensors[0].device.type):
        return tensors
    return tuple(_cast(t, torch.float32) for t in tensors)
