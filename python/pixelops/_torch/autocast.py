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


def low_precision(op: str, names: tuple, *tensors):
    """Autocast's "lower precision" rule (convolutions). Returns (tensors cast for the kernel, output dtype
    or None). The first tensor's device decides. Without autocast: (tensors unchanged, None). `op` and `names`
    (the tensors' argument names) word the error where autocast's casts leave the tensors of two dtypes."""
    if not _any_autocast():
        return tensors, None
    device = tensors[0].device.type
    if not torch.is_autocast_enabled(device) or tensors[0].dtype == torch.float64 or tensors[0].is_complex():
        return tensors, None
    low = torch.get_autocast_dtype(device)
    _check_one_dtype(op, names, tensors, "convolutions", low)
    cast = tuple(_cast(t, low) for t in tensors)
    if device == "cpu":
        return tuple(_cast(t, torch.float32) for t in cast), low
    return cast, None


def float32(op: str, names: tuple, *tensors):
    """Autocast's "float32" rule (cross-entropy): floating inputs in float32 when autocast is on."""
    if not _any_autocast():
        return tensors
    if not torch.is_autocast_enabled(tensors[0].device.type):
        return tensors
    _check_one_dtype(op, names, tensors, "cross-entropy", torch.float32)
    return tuple(_cast(t, torch.float32) for t in tensors)


def _check_one_dtype(op: str, names: tuple, tensors: tuple, computes: str, dtype):
    """Where floating tensors that autocast casts meet float64 ones, which it leaves as they are, the tensors
    stay of two dtypes, and the op's own checks, which see them cast, would name the dtype a tensor was cast
    to (float32 for a float16 input of a CPU convolution) rather than the one the caller passed. Raises here
    instead, naming what was passed (torch refuses these calls too). Tensors on another device than the first
    are left to the op's checks, which say that first."""
    if not any(isinstance(t, torch.Tensor) and t.dtype == torch.float64 for t in tensors):
        return  # (the common case: every floating tensor is cast)
    first = tensors[0]
    for name, t in zip(names[1:], tensors[1:]):
        if (isinstance(t, torch.Tensor) and t.is_floating_point() and first.is_floating_point()
                and (t.dtype == torch.float64) != (first.dtype == torch.float64) and t.device == first.device):
            raise TypeError(f"pixelops.{op}: '{name}' has dtype {_name(t)} but '{names[0]}' has {_name(first)}; "
                            f"under torch.autocast, which runs {computes} in {str(dtype).replace('torch.', '')}, "
                            "they must both be float64 or neither")


def _name(t) -> str:
    return str(t.dtype).replace("torch.", "")
