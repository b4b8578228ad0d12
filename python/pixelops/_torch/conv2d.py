"""conv2d on tensors: kernels, the pixelops::conv2d custom ops (fake kernels, autograd) and the eager path.

params (from pixelops.ops.conv2d._setup): (stride pair, padding (top, bottom, left, right), dilation pair,
groups, ntaps, relu, allow_tf32 or None). Masked convolutions are conv2d over fewer taps (ntaps).
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch

from .._arrays import ABSENT, check_array, stream
from ..ops import conv2d as _entry
from ..ops.conv2d import _setup, _setup_cached
from .autocast import low_precision
from .relu import relu as relu_tensor
from .common import (_C, FuncRules, batch_first, differentiable_op, forward_ad_active, functionalized, functorch_active,
                     traced_call)

_any_autocast = torch._C._is_any_autocast_enabled
_ARGUMENTS = ("input", "weight", "bias")  # the tensors' names in messages
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
    # custom ops return tensors: an unneeded gradient comes back empty (each its own: outputs must not alias)
    return tuple(x.new_empty(0) if g is None else g for g in (gx, gw, gb))


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


# ---- under torch.func transforms (vmap, grad, jacrev; per-sample gradients): vmap rules -------------------
# A vmapped conv is one conv. Where only the input is batched, the batch joins the images. Where the weights
# (or bias) are batched too, each batch entry is a conv of its own, and the batch joins the channels as
# groups: entry e's group g is group e*groups + g of one conv with groups*B groups (PyTorch's own batching
# rule for convolutions does the same). The backward always takes the groups: that is what gives every entry
# its own weight gradient (per-sample gradients) even where the weights are shared.
def _fold_channels(t, dim, size):
    """A vmapped 4-D tensor (batch dimension `dim`, None if it is shared) as one (N, size*C, H, W) tensor."""
    t = batch_first(t, dim, size)
    return t.transpose(0, 1).reshape(t.shape[1], size * t.shape[2], *t.shape[3:])


def _fold_weight(w, dim, size):
    """A vmapped weight (or bias) as the stacked weights of size*groups groups."""
    w = batch_first(w, dim, size)
    return w.reshape(size * w.shape[1], *w.shape[2:])


def _vmap(info, in_dims, fns, x, w, b, stride, padding, dilation, groups, ntaps, relu, tf32):
    apply, size, (xd, wd, bd) = fns.forward, info.batch_size, in_dims[:3]
    if size == 0:  # an empty vmap batch (jacrev of an empty output): nothing to fold into images or groups
        entry = _out_size(batch_first(x, xd, 0).shape[1:], batch_first(w, wd, 0).shape[1:], stride, padding,
                          dilation)
        return x.new_empty((0, *entry)), 0
    if wd is None and bd is None:  # one layer, a batch of inputs
        x = batch_first(x, xd, size)
        y = apply(x.reshape(size * x.shape[1], *x.shape[2:]), w, b, stride, padding, dilation, groups, ntaps, relu,
                  tf32)
        return y.view(size, x.shape[1], *y.shape[1:]), 0
    b = None if b is None else _fold_weight(b, bd, size)
    y = apply(_fold_channels(x, xd, size), _fold_weight(w, wd, size), b, stride, padding, dilation, groups * size,
              ntaps, relu, tf32)
    return y.view(y.shape[0], size, y.shape[1] // size, *y.shape[2:]), 1  # (no -1: y may have no images)


def _backward_vmap(info, in_dims, fns, x, w, y, grad, stride, padding, dilation, groups, ntaps, relu, tf32, needs):
    apply, size, (xd, wd, yd, gd) = fns.backward, info.batch_size, in_dims[:4]
    if size == 0:  # an empty vmap batch: each needed gradient empty, of its entries' shape
        xs, ws = batch_first(x, xd, 0).shape, batch_first(w, wd, 0).shape
        shapes = (xs, ws, ws[:2])  # (grad_bias: (0, M))
        return (tuple(x.new_empty(sh) if n else x.new_empty(0) for sh, n in zip(shapes, needs)),
                tuple(0 if n else None for n in needs))
    xf = _fold_channels(x, xd, size)
    yf = _fold_channels(y, yd, size) if relu else xf  # without ReLU, y is a placeholder the kernels do not read
    gx, gw, gb = apply(xf, _fold_weight(w, wd, size), yf, _fold_channels(grad, gd, size), stride, padding, dilation,
                       groups * size, ntaps, relu, tf32, needs)
    # (an unneeded gradient comes back empty and unbatched)
    return ((gx.view(gx.shape[0], size, gx.shape[1] // size, *gx.shape[2:]) if needs[0] else gx,
             gw.view(size, -1, *gw.shape[1:]) if needs[1] else gw,
             gb.view(size, -1) if needs[2] else gb),
            (1 if needs[0] else None, 0 if needs[1] else None, 0 if needs[2] else None))


# Derivatives of derivatives: a conv is linear in its input and in its weights, and its gradients are convs of
# the incoming gradient (gated by ReLU's y > 0, which has no derivative where it is defined), so every
# tangent and second gradient is the op itself, forward or backward, with some argument swapped for a tangent
# or an incoming gradient. Rules of FuncRules: `fns` calls the op's Functions, so they nest under further
# transforms.
def _add(total, term):
    return term if total is None else total + term


def _jvp(fns, inputs, y, tangents):
    x, w, b, stride, padding, dilation, groups, ntaps, relu, tf32 = inputs
    dx, dw, db = tangents[:3]
    conv = (stride, padding, dilation, groups, ntaps, False, tf32)
    dy = None
    if dx is not None:
        dy = fns.forward(dx, w, None, *conv)
    if dw is not None:
        dy = _add(dy, fns.forward(x, dw, None, *conv))
    if db is not None:
        dy = _add(dy, db.view(-1, 1, 1).expand_as(y))
    return dy * (y > 0) if relu else dy


def _backward_jvp(fns, inputs, grads, tangents):
    # grad_input(g, w) and grad_weight(x, g) are bilinear; grad_bias is linear in g
    x, w, y, grad, *conv, needs = inputs
    dx, dw, _, dgrad = tangents[:4]
    out = [None, None, None]
    if dgrad is not None:
        out = [t if n else None for t, n in zip(fns.backward(x, w, y, dgrad, *conv, needs), needs)]
    if dw is not None and needs[0]:
        out[0] = _add(out[0], fns.backward(x, dw, y, grad, *conv, [True, False, False])[0])
    if dx is not None and needs[1]:
        out[1] = _add(out[1], fns.backward(dx, w, y, grad, *conv, [False, True, False])[1])
    return tuple(o if o is not None else torch.zeros_like(g) for o, g in zip(out, grads))


def _double_backward(fns, inputs, grads, ggrads):
    # the adjoints of the backward: <ggx, grad_input(g, w)> = <conv(ggx, w), g>, <ggw, grad_weight(x, g)> =
    # <conv(x, ggw), g>; and as functions of w and x, grad_weight(ggx, g) and grad_input(g, ggw)
    x, w, y, grad, stride, padding, dilation, groups, ntaps, relu, tf32, needs = inputs
    ggx, ggw, ggb = (t if n else None for t, n in zip(ggrads, needs))
    conv = (stride, padding, dilation, groups, ntaps, False, tf32)
    back = (stride, padding, dilation, groups, ntaps, relu, tf32)
    g_x = g_w = g_grad = None
    if ggx is not None:
        g_grad = fns.forward(ggx, w, ggb, *conv)
        g_w = fns.backward(ggx, w, y, grad, *back, [False, True, False])[1]
    elif ggb is not None:
        g_grad = ggb.view(-1, 1, 1).expand_as(grad)
    if ggw is not None:
        g_grad = _add(g_grad, fns.forward(x, ggw, None, *conv))
        g_x = fns.backward(x, ggw, y, grad, *back, [True, False, False])[0]
    if g_grad is not None and relu:
        g_grad = g_grad * (y > 0)
    return g_x, g_w, None, g_grad, None, None, None, None, None, None, None, None


_conv2d = differentiable_op(
    "conv2d",
    forward=_forward, forward_fake=_forward_fake,
    backward_kernel=_backward_kernel, backward_fake=_backward_fake,
    setup_context=_setup_context, backward=_backward,
    func_rules=FuncRules(vmap=_vmap, backward_vmap=_backward_vmap, jvp=_jvp, backward_jvp=_backward_jvp,
                         double_backward=_double_backward),
)
conv2d_op, conv2d_backward_op, Conv2dFunction = _conv2d.op, _conv2d.backward_op, _conv2d.Function
_conv2d_apply = _conv2d.apply


def run(input, weight, bias, stride, padding, dilation, groups, activation, allow_tf32, op, mask_type):
    """pixelops.conv2d / masked_conv2d on tensors, from pixelops.ops.conv2d: autocast's policy, the checks (once
    per call signature: _setup_cached), then the custom op (traced), the autograd Function (a gradient wanted)
    or the forward kernel alone. Kept to one Python frame and a few attribute reads before the kernel call:
    at small sizes this is what a layer costs the host. The arguments keep what the caller passed (x, w, b and
    fused are what the kernels get): under functionalize, run is called again with them one level below."""
    if not isinstance(input, torch.Tensor):
        check_array(input, "input", op)
    x, w, b, fused = input, weight, bias, activation
    unbatched = x.ndim == 3
    if unbatched:
        x = x[None]
    out_dtype = None
    if _any_autocast():  # torch.autocast's policy: convolutions in low precision (autocast.py)
        (x, w, b), out_dtype = low_precision(op, _ARGUMENTS, x, w, b)
    # CPU autocast computes in float32 and rounds the output after: a fused ReLU there runs after the rounding,
    # so that its gradient's gate sees the rounded output, as torch's ReLU of a float16 conv does (a float32
    # output of 1e-8 is 0 in float16, and passed no gradient in torch)
    relu_after = out_dtype is not None and activation == "relu"
    if relu_after:
        fused = None
    if traced_call(op):  # traced (fake) tensors: the custom op, and no cache in the graph
        (strides, pads, dilations, ngroups, ntaps, relu, allow), _ = _setup(
            x, w, b, stride, padding, dilation, groups, fused, allow_tf32, op, mask_type)
        out = conv2d_op(x, w, b, list(strides), list(pads), list(dilations), ngroups, ntaps, relu, _tf32(x, allow))
    else:
        (strides, pads, dilations, ngroups, ntaps, relu, allow), shape = _setup_cached(
            x, w, b, stride, padding, dilation, groups, fused, allow_tf32, op, mask_type)
        tf32 = _tf32(x, allow)
        # torch.func's wrapper tensors, or eager forward-mode AD's tangents: the Functions with the rules (FuncRules)
        if functorch_active() or forward_ad_active():
            out = functionalized(run, input, weight, bias, stride, padding, dilation, groups, activation, allow_tf32,
                                 op, mask_type)
            if out is not None:  # (the call below did all of it: autocast, the unbatched input)
                return out
            out = _conv2d.func_apply(x, w, b, strides, pads, dilations, ngroups, ntaps, relu, tf32)
        elif _grad_enabled() and (x.requires_grad or w.requires_grad or (b is not None and b.requires_grad)):
            out = _conv2d_apply(x, w, b, strides, pads, dilations, ngroups, ntaps, relu, tf32)
        else:
            out = forward_kernel(x, w, b, strides, pads, dilations, ngroups, ntaps, relu, tf32, shape)
    if out_dtype is not None:
        out = out.to(out_dtype)
    if relu_after:
        out = relu_tensor(out, False)
    return out[0] if unbatched else out


_entry._tensor_run = run  # pixelops.conv2d's tensor calls come straight here (see ops/conv2d.py's _tensor_run)
