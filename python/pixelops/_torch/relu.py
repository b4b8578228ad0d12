"""ReLU on tensors: kernels, the pixelops::relu custom op, and the eager autograd path."""
from __future__ import annotations

import torch

from .._arrays import stream
from .common import _C, check_float_tensor, compiling, launch


def forward_kernel(x: torch.Tensor) -> torch.Tensor:
    # spelled out: this is the per-call hot path (the extension reads the tensors themselves)
    y = torch.empty_like(x)
    _C.relu_forward(x, y, 0 if x.is_cpu else stream(x))
    return y


def backward_kernel(y: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    grad_x = torch.empty_like(y)
    launch(_C.relu_backward, y, grad, grad_x)
    return grad_x


# ---- torch.library: what torch.compile and opcheck see --------------------------------------------------
@torch.library.custom_op("pixelops::relu", mutates_args=())
def relu_op(x: torch.Tensor) -> torch.Tensor:
    return forward_kernel(x)


@relu_op.register_fake
def _(x):
    return torch.empty_like(x)


@torch.library.custom_op("pixelops::relu_backward", mutates_args=())
def relu_backward_op(y: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    return backward_kernel(y, grad)


@relu_backward_op.register_fake
def _(y, grad):
    return torch.empty_like(y)


def setup_context(ctx, inputs, output):
    ctx.save_for_backward(output)


def _op_backward(ctx, grad):
    (y,) = ctx.saved_tensors
    return relu_backward_op(y, grad)


relu_op.register_autograd(_op_backward, setup_context=setup_context)


# ---- eager: the same kernels without the dispatcher round trip ----------------------------------------------
class ReluFunction(torch.autograd.Function):
    @staticmethod
    def forward(x):
        return forward_kernel(x)

    setup_context = staticmethod(setup_context)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return backward_kernel(y, grad)


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
    return ReluFunction.apply(x) if needs_grad else forward_kernel(x)
