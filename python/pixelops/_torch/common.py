"""What every op's torch side shares: the kernel call on tensors and the eager/compiled switch."""
from __future__ import annotations

import torch

from .. import _C
from .._arrays import CPU_FLOATS, CUDA_FLOATS, check_float, register_torch, stream

register_torch()  # from here on the extension reads tensors directly

LIB = "pixelops"

compiling = torch.compiler.is_compiling


_CPU_FLOATS = frozenset(getattr(torch, n) for n in CPU_FLOATS)
_CUDA_FLOATS = frozenset(getattr(torch, n) for n in CUDA_FLOATS) if _C.built_with_cuda else frozenset()


def check_float_tensor(x, name: str, op: str):
    """check_float for the torch side: the common case (a float tensor on a device with kernels) is
    recognised in a few attribute reads, since this runs on every eager call; anything else takes the full
    check, which raises the clear error."""
    if isinstance(x, torch.Tensor) and x.dtype in (_CPU_FLOATS if x.is_cpu else _CUDA_FLOATS if x.is_cuda else ()):
        return
    check_float(x, name, op)


def launch(kernel, *tensors, lead=None):
    """Runs an extension kernel on tensors (which the extension reads directly; other arguments pass as they
    are) on the current stream of the lead tensor's device (the first one by default)."""
    lead = tensors[0] if lead is None else lead
    return kernel(*tensors, stream(lead))


__all__ = ["LIB", "compiling", "launch", "check_float_tensor", "_C"]
