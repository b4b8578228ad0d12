"""The one table of drop-ins: which torch.nn module and which torch.nn.functional function pixelops replaces,
with what, and when it must not. swap() and patch() only read this table; a new op adds one row.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from . import functional as PF
from . import modules


@dataclass(frozen=True)
class DropIn:
    torch_module: type                           # replaced by swap() where why_not() gives no reason
    module: type                                 # the pixelops.nn subclass it becomes
    why_not: Callable[[torch.nn.Module], Optional[str]]
    functional: str                              # the torch.nn.functional name patch() points at `function`
    function: Callable
    tensors: Callable                            # a call's arguments -> tensors that must suit pixelops (None: never)
    half_on_cpu: Callable[[], bool]              # whether CPU float16/bfloat16 arguments can go to pixelops now

    def takes(self, *args, **kwargs) -> bool:
        """Whether pixelops runs this call (the functional's arguments), else torch's own function or forward
        does: patch() and the modules both ask here."""
        tensors = self.tensors(*args, **kwargs)
        return tensors is not None and PF.runs_on_pixelops(*tensors, half_on_cpu=self.half_on_cpu)


def _params_reason(module) -> Optional[str]:
    tensors = list(module.parameters(recurse=False)) + list(module.buffers(recurse=False))
    for t in tensors:
        if not PF.runs_on_pixelops(t):
            return (f"its parameters are {str(t.dtype).replace('torch.', '')} on {t.device}; "
                    f"pixelops has kernels for {', '.join(str(d).replace('torch.', '') for d in PF.kernel_dtypes(t.device.type)) or 'nothing'} there")
    return None


def _conv_tensors(input, weight, bias=None, *args, **kwargs):
    # (a weight with an empty dimension, no input channels say, is torch's: it gives the bias everywhere; and
    # anything but a tensor, an fx Proxy say, is asked no shape: runs_on_pixelops sends it to torch)
    if isinstance(weight, torch.Tensor) and 0 in weight.shape:
        return None
    return input, weight, bias


def _relu_tensors(input, *args, **kwargs):
    return (input,)


def _ce_dtype(t):
    """The dtype cross-entropy computes t in: under autocast (its float32 rule) half types become float32."""
    if t.dtype in (torch.float16, torch.bfloat16) and torch.is_autocast_enabled(t.device.type):
        return torch.float32
    return t.dtype


def _cross_entropy_tensors(input, target, weight=None, *args, **kwargs):
    # pixelops takes class indices (int64, uint8) and class probabilities, but no gradient for the latter, nor
    # for class weights.
    if not isinstance(target, torch.Tensor) or target.requires_grad or getattr(weight, "requires_grad", False):
        return None
    # class weights of another dtype than the logits, as cross-entropy computes them (autocast makes half types
    # float32 and leaves float64 alone): torch promotes them (probability targets) or says what is wrong
    if isinstance(weight, torch.Tensor) and isinstance(input, torch.Tensor) and _ce_dtype(weight) != _ce_dtype(input):
        return None
    if target.is_floating_point():
        return (input, target, weight) if target.dtype == getattr(input, "dtype", None) else None
    return (input, weight) if target.dtype in (torch.int64, torch.uint8) else None


def _always():
    return True


def _under_cpu_autocast():
    # conv2d and cross_entropy take CPU half types only where autocast turns them into float32 work
    return torch.is_autocast_enabled("cpu")


TABLE = (
    DropIn(torch.nn.Conv2d, modules.Conv2d, _params_reason, "conv2d", PF.conv2d, _conv_tensors,
           _under_cpu_autocast),
    DropIn(torch.nn.ReLU, modules.ReLU, _params_reason, "relu", PF.relu, _relu_tensors, _always),
    DropIn(torch.nn.CrossEntropyLoss, modules.CrossEntropyLoss, _params_reason, "cross_entropy",
           PF.cross_entropy, _cross_entropy_tensors, _under_cpu_autocast),
)
