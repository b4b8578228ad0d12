"""conv2d on tensors: kernels, the pixelops::conv2d custom ops (fake kernels, autograd) and the eager path.

params (from pixelops.ops.conv2d._setup): (stride pair, padding (top, bottom, left, right), dilation pair,
groups, ntaps, relu, allow_tf32 or None). Masked convolutions are conv2d over fewer taps (ntaps).
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch

from .._arrays import ABSENT, stream
from .common import _C, compiling, differentiable_op

# The extension reads tensors directly (common.py registered torch), so they go to it as they are; an absent
# array is ABSENT.


def _out_size(x_size, w_size, stride, pads, dilation):
    n, _, h, w = x_size
    cout, _, kh, kw = w_size
    oh = (h + pads[0] + pads[1] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (w + pads[2] + pads[3] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    return (n, cout, oh, ow)


def _tf32(x, allow_tf32) -> bool:
    if x.dtype != torch.float32 or not x.is_cuda:
        return False
    return torch.backends.cudnn.allow_tf32 if allow_tf32 is None else bool(allow_tf32)


def forward_kernel(x, w, b, stride, pads, dilation, groups, ntaps, relu, tf32, shape=None):
    """y = conv(x); shape: y's, where the caller has it already (pixelops.ops.conv2d's checks computed it)."""
    y = torch.empty(shape or _out_size(x.shape, w.shape, stride, pads, dilation), dtype=x.dtype, device=x.device)
    _C.conv2d_forward(x, w, b if b is not None else ABSENT, y, stride[0], stride[1], pads[0], pads[2], dilation[0],
                      dilation[1], groups, ntaps, relu, tf32, stream(x))
    return y


def backward_kernel(x, w, y, grad, stride, pads, dilation, groups, ntaps, relu, tf32, needs):
    """(grad_input, grad_weight, grad_bias), None where needs says not to compute it."""
    gx = torch.empty_like(x, memory_format=torch.contiguous_format) if needs[0] else None
    gw = torch.empty_like(w, memory_format=torch.contiguous_format) if needs[1] else None
    gb = torch.empty(w.shape[0], dtype=w.dtype, device=w.device) if needs[2] else None
    if gx is None and gw is None and gb is None:
        return None, None, None
    _C.conv2d_backward(x, w, y if relu else ABSENT, grad, ABSENT if gx is None else gx, ABSENT if gw is None else gw,
                       ABSENT if gb is None else gb, stride[0], stride[1], pads[0], pads[2], dilation[0], dilation[1],
                       groups, ntaps, relu, tf32, stream(x))
    return gx, gw, gb


# ---- pixelops::conv2d (compiled path) and Conv2dFunction (eager path), on the same kernels ----------------
# Built by common.differentiable_op like ReLU: the eager Function calls setup_context inside its forward
# (cheaper per call than torch's separate setup_context) and shares the backward formula with the custom op.
def _forward(x: torch.Tensor, w: torch.Tensor, b: Optional[torch.Tensor], stride: List[int], padding: List[int],
             dilation: List[int], groups: int, ntaps: int, relu: bool, tf32: bool) -> torch.Tensor:
    return forward_kernel(x, w, b, stride, padding, dilation, groups, ntaps, relu, tf32)


def _forward_fake(x, w, b, stride, padding, dilation, groups, ntaps, relu, tf32):
    return x.new_empty(_out_size(x.shape, w.shape, stride, padding, dilation))


def _backward_kernel(x: torch.Tensor, w: torch.Tensor, y: torch.Tensor, grad: torch.Tensor, stride: List[int],
                     padding: List[int], dilation: List[int], groups: int, ntaps: int, relu: bool, tf32: bool,
                     needs: List[bool]) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gx, gw, gb = backward_kernel(x, w, y, grad, stride, padding, dilation, groups, ntaps, relu, tf32, needs)
    if gx is not None and gw is not None and gb is not None:
        return gx, gw, gb
    # custom ops return tensors: an unneeded gradient comes back empty
    empty = x.new_empty(0)
    return (empty if gx is None else gx, empty if gw is None else gw, empty if gb is None else gb)


def _backward_fake(x, w, y, grad, stride, padding, dilation, groups, ntaps, relu, tf32, needs):
    return (x.new_empty(x.shape) if needs[0] else x.new_empty(0),
            w.new_empty(w.shape) if needs[1] else x.new_empty(0),
            w.new_empty(w.shape[0]) if needs[2] else x.new_empty(0))


def _setup_context(ctx, inputs, output):
    x, w, b, stride, padding, dilation, groups, ntaps, relu, tf32 = inputs
    # the custom op's schema wants lists; the eager path hands tuples straight through (both index alike)
    ctx.conv = (stride, padding, dilation, groups, ntaps, relu, tf32)
    ctx.has_bias = b is not None
    ctx.save_for_backward(x, w, output if relu else None)


def _backward(ctx, grad, bwd):
    x, w, y = ctx.saved_tensors
    needs_input_grad = ctx.needs_input_grad
    needs = [needs_input_grad[0], needs_input_grad[1], ctx.has_bias and needs_input_grad[2]]
    gx, gw, gb = bwd(x, w, y if y is not None else x, grad, *ctx.conv, needs)
    return (gx if needs[0] else None, gw if needs[1] else None, gb if needs[2] else None,
            None, None, None, None, None, None, None)


_conv2d = differentiable_op(
    "conv2d",
    forward=_forward, forward_fake=_forward_fake,
    backward_kernel=_backward_kernel, backward_fake=_backward_fake,
    setup_context=_setup_context, backward=_backward,
)
conv2d_op, conv2d_backward_op, Conv2dFunction = _conv2d.op, _conv2d.backward_op, _conv2d.Function
_conv2d_apply = _conv2d.apply


def conv2d(x, w, b, params, shape=None):
    """The torch entry: params from pixelops.ops.conv2d's checks, shape the output's (the eager forward without
    autograd uses it rather than computing it again)."""
    stride, pads, dilation, groups, ntaps, relu, allow_tf32 = params
    tf32 = _tf32(x, allow_tf32)
    if compiling():
        return conv2d_op(x, w, b, list(stride), list(pads), list(dilation), groups, ntaps, relu, tf32)
    if torch.is_grad_enabled() and (x.requires_grad or w.requires_grad or (b is not None and b.requires_grad)):
        return _conv2d_apply(x, w, b, stride, pads, dilation, groups, ntaps, relu, tf32)
    return forward_kernel(x, w, b, stride, pads, dilation, groups, ntaps, relu, tf32, shape)
