"""ReLU on tensors: kernels, the pixelops::relu custom op, and the eager autograd path."""
from __future__ import annotations

import torch

from .._arrays import stream
from .common import (_C, FuncRules, batch_first, check_float_tensor, differentiable_op, forward_ad_active,
                     functionalized, functorch_active, has_kernels, launch, no_internal_overlap, traced_call)


def forward_kernel(x: torch.Tensor) -> torch.Tensor:
    # spelled out: this is the per-call hot path (the extension reads the tensors themselves)
    y = torch.empty_like(x)
    _C.relu_forward(x, y, 0 if x.is_cpu else stream(x))
    return y


def backward_kernel(y: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    grad_x = torch.empty_like(y)
    launch(_C.relu_backward, y, grad, grad_x)
    return grad_x


# ---- pixelops::relu (compiled path) and ReluFunction (eager path), on the same kernels ----------------------
def setup_context(ctx, inputs, output):
    ctx.save_for_backward(output)


def _backward(ctx, grad, bwd):
    (y,) = ctx.saved_tensors
    return bwd(y, grad)


# Under torch.func: ReLU is elementwise, so vmap passes the batched tensor through as it is (the backward's two
# tensors first get one batch dimension, in front); its tangent, and the backward's, is the backward kernel
# (g * (y > 0)) on the tangent, y's own tangent not counting (the gate has no derivative where it is defined).
def _vmap(info, in_dims, fns, x):
    return fns.forward(x), in_dims[0]


def _backward_vmap(info, in_dims, fns, y, grad):
    (yd, gd), size = in_dims, info.batch_size
    if yd == gd:
        return fns.backward(y, grad), yd
    return fns.backward(batch_first(y, yd, size), batch_first(grad, gd, size)), 0


def _jvp(fns, inputs, y, tangents):
    return fns.backward(y, tangents[0])


def _backward_jvp(fns, inputs, grad_x, tangents):
    y, dgrad = inputs[0], tangents[1]
    return torch.zeros_like(grad_x) if dgrad is None else fns.backward(y, dgrad)


def _double_backward(fns, inputs, grad_x, ggrads):
    return None, fns.backward(inputs[0], ggrads[0])


_relu = differentiable_op(
    "relu",
    forward=forward_kernel, forward_fake=lambda x: torch.empty_like(x),
    backward_kernel=backward_kernel, backward_fake=lambda y, grad: torch.empty_like(y),
    setup_context=setup_context, backward=_backward,
    func_rules=FuncRules(vmap=_vmap, backward_vmap=_backward_vmap, jvp=_jvp, backward_jvp=_backward_jvp,
                         double_backward=_double_backward),
)
relu_op, relu_backward_op, ReluFunction = _relu.op, _relu.backward_op, _relu.Function
_relu_apply = _relu.apply


_relu_backward = _relu.differentiable_backward
_increment_version = torch._C._increment_version


class ReluInplaceFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        launch(_C.relu_forward, x, x)
        ctx.mark_dirty(x)
        ctx.save_for_backward(x)
        return x

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        # through the op's backward Function where the graph is kept (create_graph=True: a gradient penalty's
        # second derivative), else the kernel alone
        return (_relu_backward if torch.is_grad_enabled() else backward_kernel)(y, grad)


def _check_writable(x: torch.Tensor):
    """What torch's in-place ops refuse: a tensor whose elements share memory (an expanded view: every copy
    would get one element's result), and an inference tensor outside inference mode."""
    if not no_internal_overlap(x):
        raise RuntimeError("pixelops.relu: inplace=True on 'input' whose elements share memory (an expanded "
                           "view?): more than one element would be written to one place; clone it first")
    if x.is_inference() and not torch.is_inference_mode_enabled():
        raise RuntimeError("pixelops.relu: inplace=True on an inference tensor (made under torch.inference_mode) "
                           "outside inference mode is not allowed, as in PyTorch; clone it first")


_CPU_HALVES = (torch.float16, torch.bfloat16)


def relu(x: torch.Tensor, inplace: bool) -> torch.Tensor:
    if not has_kernels(x):
        if isinstance(x, torch.Tensor) and x.is_cpu and x.dtype in _CPU_HALVES and x.layout is torch.strided:
            # no half kernels on the CPU (CPU autocast hands conv2d's bfloat16 output on): max(x, 0) in float32
            # is exact after rounding back (in place under functionalize: x's value replaced, as below)
            y = functionalized(relu, x, False, writes=0) if inplace and functorch_active() else None
            if y is not None:
                return y
            y = relu(x.float(), False).to(x.dtype)
            return x.copy_(y) if inplace else y
        check_float_tensor(x, "input", "relu")  # raises the clear error
    traced = traced_call("relu")
    # torch.compile; torch.func's wrapper tensors, or eager forward-mode AD's tangents (the Function with rules);
    # under functionalize, relu below it (out of place: its output becomes x's value where inplace)
    if traced or functorch_active() or forward_ad_active():
        y = None if traced else functionalized(relu, x, False, writes=0 if inplace else None)
        if y is not None:
            return y
        y = relu_op(x) if traced else _relu.func_apply(x)
        return x.copy_(y) if inplace else y
    needs_grad = x.requires_grad and torch.is_grad_enabled()
    if inplace:
        _check_writable(x)
        if needs_grad:
            return ReluInplaceFunction.apply(x)
        launch(_C.relu_forward, x, x)
        # x changed under autograd's feet: a graph that saved it (w * x, say) must fail its version check in
        # backward rather than use the new values, as after torch's own in-place ops
        _increment_version((x,))
        return x
    return _relu_apply(x) if needs_grad else forward_kernel(x)
