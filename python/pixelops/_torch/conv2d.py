"""conv2d on tensors: kernels, the pixelops::conv2d custom ops (fake kernels, autograd) and the eager path.

params (from pixelops.ops.conv2d._setup): (stride pair, padding (top, bottom, left, right), dilation pair,
groups, ntaps, relu, allow_tf32 or None). Masked convolutions are conv2d over fewer taps (ntaps).
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch

from .._arrays import ABSENT, check_array, stream
from ..ops.conv2d import _setup, _setup_cached
from .autocast import low_precision
from .common import _C, compiling, differentiable_op

_any_autocast = torch._C._is_any_autocast_enabled
_grad_enabled = torch.is_grad_enabled
# torch.backends.cudnn.allow_tf32 (what cuDNN follows), read without the module attribute's Python property
_cudnn_tf32 = torch._C._get_cudnn_allow_tf32

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
    return _cudnn_tf32() if allow_tf32 is None else bool(allow_tf32)


def forward_kernel(x, w, b, stride, pads, dilation, groups, ntaps, relu, tf32, shape=None):
    """y = conv(x); shape: y's, where the caller has it already (pixelops.ops.conv2d's checks computed it)."""
    y = x.new_empty(shape or _out_size(x.shape, w.shape, stride, pads, dilation))
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


def run(input, weight, bias, stride, padding, dilation, groups, activation, allow_tf32, op, mask_type):
    """pixelops.conv2d / masked_conv2d on tensors, from pixelops.ops.conv2d: autocast's policy, the checks (once
    per call signature: _setup_cached), then the custom op (traced), the autograd Function (a gradient wanted)
    or the forward kernel alone. Kept to one Python frame and a few attribute reads before the kernel call:
    at small sizes this is what a layer costs the host."""
    if not isinstance(input, torch.Tensor):
        check_array(input, "input", op)
    unbatched = input.ndim == 3
    if unbatched:
        input = input[None]
    out_dtype = None
    if _any_autocast():  # torch.autocast's policy: convolutions in low precision (autocast.py)
        (input, weight, bias), out_dtype = low_precision(input, weight, bias)
    if compiling():  # traced (fake) tensors: the custom op, and no cache in the graph
        (stride, pads, dilation, groups, ntaps, relu, allow_tf32), _ = _setup(
            input, weight, bias, stride, padding, dilation, groups, activation, allow_tf32, op, mask_type)
        out = conv2d_op(input, weight, bias, list(stride), list(pads), list(dilation), groups, ntaps, relu,
                        _tf32(input, allow_tf32))
    else:
        (stride, pads, dilation, groups, ntaps, relu, allow_tf32), shape = _setup_cached(
            input, weight, bias, stride, padding, dilation, groups, activation, allow_tf32, op, mask_type)
        tf32 = _tf32(input, allow_tf32)
        if _grad_enabled() and (input.requires_grad or weight.requires_grad
                                or (bias is not None and bias.requires_grad)):
            out = _conv2d_apply(input, weight, bias, stride, pads, dilation, groups, ntaps, relu, tf32)
        else:
            out = forward_kernel(input, weight, bias, stride, pads, dilation, groups, ntaps, relu, tf32, shape)
    if out_dtype is not None:
        out = out.to(out_dtype)
    return out[0] if unbatched else out
