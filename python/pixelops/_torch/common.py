"""What every op's torch side shares: the kernel call on tensors and the eager/compiled switch."""
from __future__ import annotations

import torch

from .. import _C
from .._arrays import stream, view

LIB = "pixelops"

compiling = torch.compiler.is_compiling


def launch(kernel, *tensors, lead=None):
    """Runs an extension kernel on tensors (None passes through as None) on the current stream of the
    lead tensor's device (the first one by default)."""
    lead = tensors[0] if lead is None else lead
    return kernel(*[view(t) if isinstance(t, torch.Tensor) else t for t in tensors], stream(lead))


__all__ = ["LIB", "compiling", "launch", "_C"]
