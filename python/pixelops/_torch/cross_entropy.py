"""Cross-entropy on tensors: kernels, the pixelops::cross_entropy custom op, and the eager autograd path.

The forward kernel writes d loss / d logits (already scaled for the reduction) while it computes the loss; the
backward kernel only multiplies that by the incoming gradient, in place, so forward + backward hold one extra
logits-sized buffer (none with inplace_backward=True, where the gradient is written over the logits).
Class-probability targets that require grad get -(1 - eps) w_c log p_c from a kernel of their own in backward.
"""
from __future__ import annotations

from typing import Optional

import torch

from .._arrays import stream
from ..ops.cross_entropy import NO_ARRAY, OP, _index_torch_dtypes, layout
from .common import (_C, FuncRules, batch_first, eager_apply, forward_ad_active, func_function, functionalized,
                     functorch_active, no_internal_overlap, traced_call, vmap_by_loop)

_index_torch_dtypes()  # the checks' index and probability dtypes kept now, not by a first call inside compile


def _as_3d(x: torch.Tensor, N: int, C: int, S: int):
    """(N, C, S) view of the logits when their strides allow one (True), else a copy (False)."""
    try:
        return x.view(N, C, S), True
    except RuntimeError:
        return x.reshape(N, C, S), False


def _bad_target_check(status: torch.Tensor, C: int, ignore_index: int):
    """CUDA kernels flag a bad class index in device memory instead of a device-side assert; reading the flag
    is a host sync, skipped while a CUDA graph is being captured (nothing has run yet then)."""
    if torch.cuda.is_current_stream_capturing():
        return
    bad, value = status[:2].tolist()
    if bad:
        raise IndexError(f"pixelops.{OP}: target {value} is out of bounds: expected class indices in [0, {C}) "
                         f"or ignore_index={ignore_index}")


def forward_kernel(x: torch.Tensor, target: torch.Tensor, weight: Optional[torch.Tensor], ignore_index: int,
                   reduction: int, eps: float, need_grad: bool, inplace: bool = False):
    """(loss, gradient as an (N, C, S) tensor or None, whether the gradient was written over x)."""
    N, C, S, none_shape = layout(x.shape)
    x3, is_view = _as_3d(x, N, C, S)
    t = target.reshape(N, C, S) if target.is_floating_point() else target.reshape(N, S)
    w = NO_ARRAY if weight is None else weight.contiguous()
    loss = torch.empty((N, S) if reduction == 0 else (), dtype=x.dtype, device=x.device)
    g3 = None
    in_place = False
    if need_grad:
        in_place = inplace and is_view and no_internal_overlap(x3)  # else a buffer of its own, as without inplace
        g3 = x3 if in_place else torch.empty_like(x3)
    status = torch.zeros(8, dtype=torch.int64, device=x.device) if x.is_cuda else None  # see cross_entropy.cu
    _C.cross_entropy_forward(x3, t, w, loss, NO_ARRAY if g3 is None else g3,
                             NO_ARRAY if status is None else status, ignore_index, reduction, eps, stream(x))
    if status is not None and not target.is_floating_point():
        _bad_target_check(status, C, ignore_index)
    return (loss.view(none_shape) if reduction == 0 else loss), g3, in_place


def _per_position(grad_loss: torch.Tensor, N: int, S: int, reduction: int, dtype) -> torch.Tensor:
    """The incoming gradient as an (N, S) array: per position for 'none', else one number broadcast to every
    position (zero strides, no copy)."""
    grad_loss = grad_loss.to(dtype)
    return grad_loss.reshape(N, S) if reduction == 0 else grad_loss.expand(N, S)


def backward_kernel(grad3: torch.Tensor, grad_loss: torch.Tensor, reduction: int, out: Optional[torch.Tensor] = None):
    """grad3 * grad_loss (broadcast over the classes), into out (may be grad3 itself) or a new tensor."""
    N, C, S = grad3.shape
    gl = _per_position(grad_loss, N, S, reduction, grad3.dtype)
    out = torch.empty_like(grad3) if out is None else out
    _C.cross_entropy_backward(grad3, gl, out, stream(grad3))
    return out


# ---- torch.library: what torch.compile and opcheck see --------------------------------------------------
def _grad_like(x: torch.Tensor) -> torch.Tensor:
    N, C, S, _ = layout(x.shape)
    return torch.empty_like(x.reshape(N, C, S))


def _loss_and_grad(input: torch.Tensor, target: torch.Tensor, weight: Optional[torch.Tensor], ignore_index: int,
                   reduction: int, label_smoothing: float, need_grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, d loss / d logits as (N, C, S), empty without need_grad): the custom op, and the torch.func path."""
    loss, g3, _ = forward_kernel(input, target, weight, ignore_index, reduction, label_smoothing, need_grad)
    return loss, (g3 if need_grad else input.new_empty(0))


cross_entropy_op = torch.library.custom_op("pixelops::cross_entropy", _loss_and_grad, mutates_args=())


@cross_entropy_op.register_fake
def _(input, target, weight, ignore_index, reduction, label_smoothing, need_grad):
    N, C, S, none_shape = layout(input.shape)
    loss = input.new_empty(none_shape if reduction == 0 else ())
    return loss, (_grad_like(input) if need_grad else input.new_empty(0))


@torch.library.custom_op("pixelops::cross_entropy_backward", mutates_args=())
def cross_entropy_backward_op(grad: torch.Tensor, grad_loss: torch.Tensor, reduction: int) -> torch.Tensor:
    return backward_kernel(grad, grad_loss, reduction)


@cross_entropy_backward_op.register_fake
def _(grad, grad_loss, reduction):
    return torch.empty_like(grad)


def _setup_context(ctx, inputs, output):
    x, reduction, need_grad = inputs[0], inputs[4], inputs[6]
    ctx.shape = x.shape
    ctx.reduction = reduction
    ctx.need_grad = need_grad
    ctx.save_for_backward(output[1])


def _backward(ctx, grad_loss, _grad_of_grad, bwd):
    if not ctx.need_grad:
        raise RuntimeError(f"pixelops.{OP}: the forward ran without a gradient (need_grad=False)")
    (g3,) = ctx.saved_tensors
    return bwd(g3, grad_loss, ctx.reduction).view(ctx.shape), None, None, None, None, None, None


cross_entropy_op.register_autograd(lambda ctx, grad_loss, grad_of_grad: _backward(ctx, grad_loss, grad_of_grad,
                                                                                  cross_entropy_backward_op),
                                   setup_context=_setup_context)

# ---- under torch.func transforms: the same pair of kernels in the Functions those need ------------------------
# vmap: the batch entries' rows become one loss of reduction 'none' (one launch, and on CUDA one check of the
# targets, not one per entry), and each entry's mean or sum is taken from it: an entry's mean divides its sum,
# and its gradient, by its own total weight of non-ignored targets (by its element count for class
# probabilities), as the loss of that entry alone would. Class weights per entry: the loss once per entry.
# (No forward-mode rule: the tangent of the gradient the forward writes would need the softmax's Jacobian.)
def _vmap(info, in_dims, fns, x, target, weight, ignore_index, reduction, eps, need_grad):
    if in_dims[2] is not None:
        return vmap_by_loop(info, in_dims, fns.forward, x, target, weight, ignore_index, reduction, eps, need_grad)
    size = info.batch_size
    x, target = batch_first(x, in_dims[0], size), batch_first(target, in_dims[1], size)
    entry = x.shape[1:]  # one entry's logits: (C), (N, C) or (N, C, d1, ...)
    if size == 0:  # an empty vmap batch: empty results of the entries' shapes
        n, c, s, none_shape = layout(entry)
        loss = x.new_empty((0, *none_shape) if reduction == 0 else (0,))
        return (loss, x.new_empty((0, n, c, s)) if need_grad else x.new_empty(0)), (0, 0 if need_grad else None)
    if len(entry) > 1:  # the entries' rows one after the other (unbatched entries are rows already)
        x, target = x.flatten(0, 1), target.flatten(0, 1)
    loss, g3 = fns.forward(x, target, weight, ignore_index, 0, eps, need_grad)
    n, _, s, none_shape = layout(entry)
    g3 = g3.view(size, n, *g3.shape[1:]) if need_grad else g3
    if reduction == 0:
        return (loss.view(size, *none_shape), g3), (0, 0 if need_grad else None)
    total = loss.reshape(size, -1).sum(1)
    if reduction == 1:  # mean
        if target.is_floating_point():
            count = torch.full((size,), float(n * s), dtype=x.dtype, device=x.device)
        else:
            valid = target != ignore_index
            per = valid.to(x.dtype) if weight is None else weight[torch.where(valid, target.long(), 0)] * valid
            count = per.reshape(size, -1).sum(1)
        total = total / count  # 0/0 = NaN for an entry whose targets are all ignored, as PyTorch's
        if need_grad:  # whose gradient is zero there, as PyTorch's (its g3 is zero)
            g3 = g3 / torch.where(count > 0, count, 1).view(size, 1, 1, 1)
    return (total, g3), (0, 0 if need_grad else None)


def _backward_vmap(info, in_dims, fns, g3, grad_loss, reduction):
    # each entry's gradient scaled by its incoming gradient: one launch with a multiplier per position
    size = info.batch_size
    g3, grad_loss = batch_first(g3, in_dims[0], size), batch_first(grad_loss, in_dims[1], size)
    _, n, c, s = g3.shape
    if size == 0:  # an empty vmap batch
        return g3.new_empty((0, n, c, s)), 0
    per_position = grad_loss.reshape(size, -1).expand(size, n * s) if reduction != 0 else grad_loss
    out = fns.backward(g3.reshape(size * n, c, s), per_position.reshape(size * n, s), 0)
    return out.view(size, n, c, s), 0


def _scaled_grad(g3: torch.Tensor, grad_loss: torch.Tensor, reduction: int) -> torch.Tensor:
    return backward_kernel(g3, grad_loss, reduction)


_func_apply = func_function(OP, _loss_and_grad, _setup_context, _backward, _scaled_grad,
                            FuncRules(vmap=_vmap, backward_vmap=_backward_vmap)).forward


# ---- eager: the same kernels without the dispatcher round trip ----------------------------------------------
class CrossEntropyFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, target, weight, ignore_index, reduction, eps, inplace):
        x_grad, target_grad = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if target_grad and inplace:
            raise ValueError(f"pixelops.{OP}: inplace_backward=True cannot be used when the class-probability "
                             "'target' requires grad (its gradient needs the logits)")
        loss, g3, in_place = forward_kernel(x, target, weight, ignore_index, reduction, eps, x_grad, inplace)
        ctx.g3 = g3  # an attribute, not a saved tensor: with inplace it is x, whose version we bump below
        ctx.shape = x.shape
        ctx.args = (ignore_index, reduction, eps)
        ctx.in_place = in_place
        if in_place:
            # x now holds the gradient: anything that saved x for its own backward must fail its version check.
            torch.autograd.graph.increment_version(x)
            ctx.save_for_backward(None, target, weight)
        else:
            ctx.save_for_backward(x, target, weight)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        if torch.is_grad_enabled():  # a backward with create_graph=True: its result would be a constant
            raise RuntimeError(f"pixelops.{OP}: second derivatives (a backward with create_graph=True, as a "
                               "gradient penalty takes) are not supported; use torch.nn.functional.cross_entropy "
                               "for that loss")
        grad_x = grad_target = None
        if ctx.needs_input_grad[0]:
            grad_x = _input_grad(ctx, grad_loss)
        if ctx.needs_input_grad[1]:
            x, target, weight = ctx.saved_tensors
            grad_target = target_grad_kernel(x, weight, grad_loss, ctx.args[1], ctx.args[2])
        return grad_x, grad_target, None, None, None, None, None


def _input_grad(ctx, grad_loss):
    g3, ctx.g3 = ctx.g3, None
    if g3 is None:  # a second backward through this graph (retain_graph=True): the first one used g3 up
        if ctx.in_place:
            raise RuntimeError(f"pixelops.{OP}: with inplace_backward=True the gradient was written over the "
                               "logits and can be used by one backward only (retain_graph is not supported)")
        x, target, weight = ctx.saved_tensors
        _, g3, _ = forward_kernel(x, target, weight, *ctx.args, True)
    reduction = ctx.args[1]
    if reduction != 0 and not grad_loss.is_cuda and grad_loss.item() == 1.0:
        grad = g3  # loss.backward() of a mean or sum: the gradient is ready (a host read, so CPU only)
    else:
        grad = backward_kernel(g3, grad_loss, reduction, out=g3)
    return grad.view(ctx.shape)


def target_grad_kernel(x: torch.Tensor, weight: Optional[torch.Tensor], grad_loss: torch.Tensor, reduction: int,
                       eps: float) -> torch.Tensor:
    """d loss / d target for class-probability targets: -(1 - eps) w_c log p_c, scaled by the reduction."""
    N, C, S, _ = layout(x.shape)
    x3, _ = _as_3d(x, N, C, S)
    w = NO_ARRAY if weight is None else weight.contiguous()
    gl = _per_position(grad_loss, N, S, reduction, x.dtype)
    out = torch.empty_like(x3)
    factor = -(1.0 - eps) / (max(N * S, 1) if reduction == 1 else 1)  # (no position at all: nothing to scale)
    _C.cross_entropy_target_backward(x3, w, gl, out, factor, stream(x))
    return out.view(x.shape)


_cross_entropy_apply = eager_apply(CrossEntropyFunction, 3)  # x, target, weight


def cross_entropy(x: torch.Tensor, target: torch.Tensor, weight: Optional[torch.Tensor], ignore_index: int,
                  reduction: int, eps: float, inplace: bool) -> torch.Tensor:
    if target.is_floating_point() and target.dtype != x.dtype:
        return _promoted(x, target, weight, ignore_index, reduction, eps, inplace)
    grad_on = torch.is_grad_enabled()
    needs_grad = x.requires_grad and grad_on
    target_grad = target.requires_grad and grad_on  # only class probabilities can require grad
    if weight is not None and weight.requires_grad and grad_on:
        raise RuntimeError(f"pixelops.{OP}: 'weight' requires grad, but pixelops computes no gradient for the "
                           "class weights; detach it (or use torch.nn.functional.cross_entropy)")
    traced = traced_call(OP)
    # torch.compile; torch.func's wrapper tensors, or eager forward-mode AD's tangents (where the Function with
    # rules raises: cross_entropy has no forward-mode rule)
    if traced or functorch_active() or forward_ad_active():
        # functionalize: this call again, below it (and without inplace_backward, which has no effect under
        # torch.compile and the other transforms either: a write over the unwrapped logits would go unseen)
        loss = None if traced else functionalized(cross_entropy, x, target, weight, ignore_index, reduction, eps,
                                                  False)
        if loss is not None:
            return loss
        if target_grad:
            where = "torch.compile" if traced else "torch.func transforms"
            raise NotImplementedError(f"pixelops.{OP}: under {where} the class-probability 'target' cannot "
                                      "require grad (detach it, or call pixelops.cross_entropy eagerly)")
        # (under torch.func the gradient is written whenever grad mode is on: inside vmap inside grad, the
        # vmapped logits report requires_grad False, yet grad differentiates through them)
        loss, _ = (cross_entropy_op if traced else _func_apply)(x, target, weight, ignore_index, reduction, eps,
                                                                needs_grad or (grad_on and not traced))
        return loss
    if not (needs_grad or target_grad):
        return forward_kernel(x, target, weight, ignore_index, reduction, eps, False)[0]
    # (where the gradient would be written over a leaf's memory: a leaf, or a view of one, but not an expanded
    # view, which gets a buffer of its own)
    if inplace and needs_grad and (x._base if x._is_view() else x).is_leaf and no_internal_overlap(x):
        raise RuntimeError(f"pixelops.{OP}: inplace_backward=True would overwrite a leaf tensor that requires grad "
                           "(or a view of one); use it on computed logits (the output of a layer)")
    return _cross_entropy_apply(x, target, weight, ignore_index, reduction, eps, inplace)


def _promoted(x: torch.Tensor, target: torch.Tensor, weight: Optional[torch.Tensor], ignore_index: int,
              reduction: int, eps: float, inplace: bool) -> torch.Tensor:
    """Class probabilities of another dtype than the logits (the checks took float16, bfloat16, float32 and
    float64): torch's loss has the promoted dtype, its gradients the dtypes of the logits and of the target.

    The kernels hold one dtype, so they run in the logits' dtype on the probabilities converted to it, and the
    loss is converted to the promoted dtype: both conversions are differentiable .to's, so autograd (eager,
    torch.compile, torch.func) casts the incoming gradient to the logits' dtype and the target's gradient back
    to the target's. That is torch's own precision: its log_softmax runs in the logits' dtype (the products
    and the sum after it are promoted). Converting the logits to the promoted dtype instead would be more exact
    than torch, but costs a logits-sized copy, and a gradient buffer, in the wider dtype, and could not take
    inplace_backward; this way inplace_backward writes the gradient of the logits' dtype over them as with one
    dtype (a target that requires grad still refuses it: its gradient needs the logits). Narrower probabilities
    convert exactly; float64 ones with float32 logits differ from torch's by float32 rounding (of the
    probabilities, and of the loss before it is promoted: about 1e-7 relative). On CUDA, float16/bfloat16
    logits round the probabilities and the loss to their dtype (torch's log-probabilities are rounded to it
    too, but it sums in the wider dtype): a half-precision loss, returned in the promoted dtype."""
    loss = cross_entropy(x, target.to(x.dtype), weight, ignore_index, reduction, eps, inplace)
    return loss.to(torch.promote_types(x.dtype, target.dtype))  # (no copy where that is x's dtype)
