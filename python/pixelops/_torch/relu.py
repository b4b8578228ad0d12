"""ReLU on tensors: kernels, the pixelops::relu custom op, and the eager autograd path."""
from __future__ import annotations

import torch

from .._arrays import stream
from .common import _C, check_float_tensor, compiling, differentiable_op, launch


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


_relu = differentiable_op(
    "relu",
    forward=forward_kernel, forward_fake=lambda x: torch.empty_like(x),
    backward_kernel=backward_kernel, backward_fake=lambda y, grad: torch.empty_like(y),
    setup_context=setup_context, backward=_backward,
)
relu_op, relu_backward_op, ReluFunction = _relu.op, _relu.backward_op, _relu.Function
_relu_apply = _relu.apply


class ReluInplaceFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        launch(_C.relu_forward, x, x)
        ctx.mark_dirty(x)
        ctx.save_for_backward(x)
        return x

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return backward_kernel(y, grad)


def relu(x: torch.Tensor, inplace: bool) -> torch.Tensor:
    check_float_tensor(x, "input", "relu")
    if compiling():
        y = relu_op(x)
        return x.copy_(y) if inplace else y
    needs_grad = x.requires_grad and torch.is_grad_enabled()
    if inplace:
        if needs_grad:
            return ReluInplaceFunction.apply(x)
        launch(_C.relu_forward, x, x)
        return x
    return _relu_apply(x) if needs_grad else forward_kernel(x)
