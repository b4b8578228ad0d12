"""What every op's torch side shares: the kernel call on tensors, the eager/compiled switch, and the builder
that turns a pair of kernels into a torch.library custom op plus the cheaper eager autograd.Function.

    relu = differentiable_op(
        "relu",
        forward=forward_kernel, forward_fake=lambda x: torch.empty_like(x),
        backward_kernel=backward_kernel, backward_fake=lambda y, g: torch.empty_like(y),
        setup_context=setup_context,            # (ctx, inputs, output), shared by both paths
        backward=lambda ctx, grad, bwd: bwd(ctx.saved_tensors[0], grad),
    )
    relu.op(x)          # pixelops::relu, what torch.compile / opcheck / fake modes see
    relu.Function       # torch.autograd.Function on the same kernels, for eager calls

`backward` is written once: it receives `bwd`, which is the pixelops::<name>_backward custom op on the
compiled path (so the backward graph holds an op with a fake kernel, not an opaque kernel call) and the plain
backward kernel on the eager path.
"""
from __future__ import annotations

import inspect
import typing
from types import SimpleNamespace
from typing import Callable, Optional

import torch

from .. import _C
from .._arrays import CPU_FLOATS, CUDA_FLOATS, check_float, register_torch, stream

register_torch()  # from here on the extension reads tensors directly

LIB = "pixelops"

_is_compiling = torch.compiler.is_compiling
_dispatch_modes = torch._C._len_torch_dispatch_stack
_grad_enabled = torch.is_grad_enabled


def compiling() -> bool:
    """True where a call must go through the torch.library custom op rather than straight to the kernels:
    under torch.compile (Dynamo), and under any dispatch mode (FakeTensorMode, make_fx/AOTAutograd tracing,
    the schema checks of opcheck, functionalization), whose tensors may have no data a kernel could read.

    is_compiling() comes first: Dynamo folds it to True, so it never traces the dispatch-stack query."""
    return _is_compiling() or _dispatch_modes() > 0


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


# Every custom op registered through this module, by short name ("relu", "relu_backward", ...).
OPS: dict = {}


def custom_op(name: str, kernel: Callable, fake: Callable, *, mutates_args=(), schema: Optional[str] = None):
    """Registers `kernel` (type-annotated, as torch.library requires, or given `schema`) as pixelops::<name>
    with `fake` as its fake kernel (shapes and dtypes only, no data)."""
    op = torch.library.custom_op(f"{LIB}::{name}", kernel, mutates_args=mutates_args, schema=schema)
    op.register_fake(fake)
    OPS[name] = op
    return op


_TENSOR_HINTS = (torch.Tensor, Optional[torch.Tensor])
_functorch_active = torch._C._are_functorch_transforms_active
_unwrap_if_dead = getattr(torch._C._functorch, "unwrap_if_dead", None)


def eager_apply(function, ntensors: int) -> Callable:
    """function.apply, minus its Python preamble. Where no functorch transform (vmap, grad, ...) is active,
    Function.apply only unwraps dead functorch wrappers among its arguments and calls torch's C++ apply; this
    does the same for the first `ntensors` arguments (the tensors, or None) and calls it directly: 1.5 us less
    a call on a 2-core CPU (conv2d's apply on a tiny tensor: 13.5 -> 12 us; the whole forward with autograd
    about 18 -> 16.6). Under a transform, and on a torch without the unwrapping function, Function.apply
    itself."""
    if _unwrap_if_dead is None:
        return function.apply
    apply_c = super(torch.autograd.Function, function).apply  # torch._C._FunctionBase.apply, bound to function
    slow = function.apply

    def apply(*args):
        if _functorch_active():
            return slow(*args)
        return apply_c(*[a if a is None else _unwrap_if_dead(a) for a in args[:ntensors]], *args[ntensors:])

    return apply


def differentiable_op(name: str, *, forward: Callable, forward_fake: Callable, backward_kernel: Callable,
                      backward_fake: Callable, setup_context: Callable, backward: Callable) -> SimpleNamespace:
    """pixelops::<name> and pixelops::<name>_backward with autograd registered, and the eager
    autograd.Function sharing the same kernels, setup_context and backward formula.

    Returns a namespace with .op, .backward_op, .Function and .apply (Function.apply for eager calls, without
    its Python preamble: eager_apply). Non-tensor arguments of `forward` come after the tensors and get no
    gradient (backward returns None for them)."""
    op = custom_op(name, forward, forward_fake)
    backward_op = custom_op(f"{name}_backward", backward_kernel, backward_fake)

    def op_backward(ctx, *grads):
        return backward(ctx, *grads, backward_op)

    op.register_autograd(op_backward, setup_context=setup_context)

    # The eager Function is written the old way, forward(ctx, *args) calling setup_context itself: on a small
    # tensor that costs some 20 us less per forward+backward than a separate setup_context in PyTorch 2.13,
    # and once_differentiable another 5 us. What once_differentiable guards, a backward run with
    # create_graph=True, takes the backward custom op instead: it has no autograd of its own, so
    # differentiating the gradient again fails loudly rather than silently giving zero.
    def eager_forward(ctx, *args):
        output = forward(*args)
        setup_context(ctx, args, output)
        return output

    def eager_backward(ctx, *grads):
        return backward(ctx, *grads, backward_op if _grad_enabled() else backward_kernel)

    function = type(f"{name.title().replace('_', '')}Function", (torch.autograd.Function,), {
        "forward": staticmethod(eager_forward),
        "backward": staticmethod(eager_backward),
        "__doc__": f"Eager autograd path of pixelops::{name} (same kernels, no dispatcher round trip).",
    })
    hints = typing.get_type_hints(forward)
    params = list(inspect.signature(forward).parameters)
    ntensors = next((i for i, p in enumerate(params) if hints.get(p) not in _TENSOR_HINTS), len(params))
    return SimpleNamespace(op=op, backward_op=backward_op, Function=function, apply=eager_apply(function, ntensors))


__all__ = ["LIB", "OPS", "compiling", "launch", "check_float_tensor", "custom_op", "differentiable_op",
           "eager_apply", "_C"]
