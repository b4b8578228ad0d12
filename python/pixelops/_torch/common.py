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
import warnings
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Callable, Optional

import torch
import torch.autograd.forward_ad as _fwad

from .. import _C
from .._arrays import CPU_FLOATS, CUDA_FLOATS, MAX_DIMS, check_float, register_torch, stream

register_torch()  # from here on the extension reads tensors directly

# torch.jit.trace warns at every shape read into a Python int, since a traced graph keeps such values as
# constants; pixelops' checks read shapes that way, but the ops they trace (custom ops, compiling()) take no
# argument made from them, so a trace stays valid for other shapes. Those warnings, and only pixelops' own, are
# not shown.
warnings.filterwarnings("ignore", category=torch.jit.TracerWarning, module=r"pixelops\.")

LIB = "pixelops"

_is_compiling = torch.compiler.is_compiling
_dispatch_modes = torch._C._len_torch_dispatch_stack
_jit_tracing = torch._C._get_tracing_state
_grad_enabled = torch.is_grad_enabled


def compiling() -> bool:
    """True where a call must go through the torch.library custom op rather than straight to the kernels:
    under torch.compile (Dynamo), and under any dispatch mode (FakeTensorMode, make_fx/AOTAutograd tracing,
    the schema checks of opcheck, functionalization), whose tensors may have no data a kernel could read; and
    under torch.jit.trace, which records only the ops it sees: a kernel call outside them would leave the
    traced graph an empty output tensor and nothing that fills it.

    is_compiling() comes first: Dynamo folds it to True, so it never traces the other queries."""
    return _is_compiling() or _dispatch_modes() > 0 or _jit_tracing() is not None


def forward_ad_active() -> bool:
    """True inside torch.autograd.forward_ad.dual_level() (eager forward-mode AD): tangents ride on the tensors,
    and only the ops' torch.func Functions (func_apply), which have jvp rules, carry them on. The eager
    Functions and the kernels alone would drop them: the output's tangent would be None."""
    return _fwad._current_level >= 0


def traced_call(op: str) -> bool:
    """compiling(), as an op's entry point asks it: whether the call goes through the custom op. Where
    forward-mode AD meets tracing (torch.func.linearize traces a jvp with make_fx) it raises instead: the custom
    ops have no forward-mode rule, and their tangents would come out zero."""
    if not compiling():
        return False
    if forward_ad_active():
        raise NotImplementedError(f"pixelops.{op}: forward-mode AD while tracing (torch.func.linearize) is not "
                                  "supported; use torch.func.jvp, or forward_ad eagerly")
    return True


_STRIDED = torch.strided
_CPU_FLOATS = frozenset(getattr(torch, n) for n in CPU_FLOATS)
_CUDA_FLOATS = frozenset(getattr(torch, n) for n in CUDA_FLOATS) if _C.built_with_cuda else frozenset()


def has_kernels(x) -> bool:
    """Whether x is a tensor the kernels take as it is (a dense float tensor of a dtype its device has kernels
    for), in a few attribute reads: this runs on every eager call."""
    return (isinstance(x, torch.Tensor) and x.dtype in (_CPU_FLOATS if x.is_cpu else _CUDA_FLOATS if x.is_cuda else ())
            and x.layout is _STRIDED and x.ndim <= MAX_DIMS)


def check_float_tensor(x, name: str, op: str):
    """check_float for the torch side: the common case (has_kernels) passes at once; anything else takes the
    full check, which raises the clear error."""
    if not has_kernels(x):
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


def no_internal_overlap(t: torch.Tensor) -> bool:
    """Whether no two of t's elements share memory (sufficient test: each dimension, smallest stride first, steps
    past everything the smaller ones reach). An expanded view fails it: a result written over it would put
    several elements' values into one place."""
    if t.is_contiguous():
        return True
    extent = 1
    for stride, size in sorted((st, sz) for st, sz in zip(t.stride(), t.shape) if sz > 1):
        if stride < extent:
            return False
        extent = stride * size
    return True


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


# functorch_active(): True inside a torch.func transform (grad, vmap, jacrev, ...), whose tensors are wrappers
# with no data of their own, so the ops take their transform-aware Functions (differentiable_op's .func_apply).
# torch's C function itself: every eager call asks.
functorch_active = _functorch_active

try:  # functorch's own helpers (private: a torch without them leaves functionalize to raise its NYI error)
    from torch._functorch.eager_transforms import (_unwrap_all_tensors_from_functional as _unwrap_functional,
                                                   _wrap_all_tensors_to_functional as _wrap_functional)
    from torch._functorch.pyfunctorch import coerce_cinterpreter as _coerce_interpreter
    _peek_interpreter = torch._C._functorch.peek_interpreter_stack
    _FUNCTIONALIZE = torch._C._functorch.TransformType.Functionalize
    _is_functional = torch._is_functional_tensor
    _functionalize_replace = torch._functionalize_replace
    _functionalize_commit_update = torch._functionalize_commit_update
    _functionalize_sync = torch._functionalize_sync
except (ImportError, AttributeError):
    _FUNCTIONALIZE = None


def functionalized(entry: Callable, *args, writes: Optional[int] = None):
    """entry(*args) as functorch runs an ATen op under torch.func.functionalize, where that is the innermost
    transform; None where it is not. functorch has no functionalize rule for autograd.Function (the ops'
    Functions raise "NYI: Functionalize rule for custom_function_call"), but the ops are functional, so this
    unwraps the functional tensors among args, calls the op's entry point again one level below (where whatever
    lies there, plain eager, grad, vmap or another functionalize, takes its usual path) and wraps the outputs for
    this level. Asked only where functorch_active() (or forward-mode AD) already holds: the plain eager path
    never gets here.

    An op that writes its output into an argument (relu's inplace=True) gives that argument's index as `writes`,
    with arguments that have the entry compute out of place: the output computed below then replaces the
    argument's value, as functionalization does for torch's own in-place ops (relu_: relu below, the wrapper's
    value replaced and the update committed to its views), and the argument is returned. A write into the
    unwrapped tensor would go unseen, and a copy_ into the wrapper turns into aten::copy, which autograd cannot
    differentiate."""
    if _FUNCTIONALIZE is None:
        return None
    interpreter = _peek_interpreter()
    if interpreter is None or interpreter.key() != _FUNCTIONALIZE:
        return None
    interpreter = _coerce_interpreter(interpreter)
    unwrapped = _unwrap_functional(args, reapply_views=interpreter.functionalize_add_back_views())
    with interpreter.lower():
        out = entry(*unwrapped)
        if writes is not None and not _is_functional(args[writes]):  # a tensor from outside the transform
            return args[writes].copy_(out)
    if writes is None:
        return _wrap_functional(out, interpreter.level())
    written = args[writes]
    _functionalize_replace(written, out)
    _functionalize_commit_update(written)
    _functionalize_sync(written)
    return written


def batch_first(x, dim, size: int):
    """x with its vmap dimension `dim` moved to the front, or, where x is not batched (dim None), expanded to
    `size` along a new front dimension (a view: no copy)."""
    return x.movedim(dim, 0) if dim is not None else x.expand(size, *x.shape)


def vmap_by_loop(info, in_dims, apply, *args):
    """What any vmap rule can fall back on: apply once per batch entry, the results stacked along a new first
    dimension (out_dims 0)."""
    results = [apply(*[a if d is None else a.select(d, i) for a, d in zip(args, in_dims)])
               for i in range(info.batch_size)]
    if isinstance(results[0], tuple):
        return tuple(torch.stack(r) for r in zip(*results)), (0,) * len(results[0])
    return torch.stack(results), 0


@dataclass
class FuncRules:
    """What an op needs under torch.func transforms beyond its kernels. Each rule gets `fns`, whose .forward
    and .backward call the op's two transform-aware Functions (so a rule may use the op itself on other
    tensors: a conv's tangent is a conv), then:
      vmap, backward_vmap   (info, in_dims, fns, *args) -> (output, out_dims), as autograd.Function.vmap
      jvp, backward_jvp     (fns, inputs, output, tangents) -> the output's tangent(s) (forward-mode AD:
                            torch.func.jvp, jacfwd, and with backward_jvp hessian's forward-over-reverse)
      double_backward       (fns, inputs, output, grads) -> the gradients of the backward's inputs (reverse
                            over reverse: a grad of a grad)
    A rule left out raises a NotImplementedError that names the op where a transform needs it."""
    vmap: Callable
    backward_vmap: Callable
    jvp: Optional[Callable] = None
    backward_jvp: Optional[Callable] = None
    double_backward: Optional[Callable] = None


def _missing(name: str, what: str):
    def rule(*args):
        raise NotImplementedError(f"pixelops.{name}: {what} are not implemented (use the torch.nn.functional "
                                  "op where a torch.func transform needs them)")
    return rule


_TENSOR = object()  # marks where a saved item is a tensor (kept in ctx.saved_tensors)


def _saving(setup_context, for_backward: bool):
    """setup_context that also keeps every input and the output for the rules: tensors through
    ctx.save_for_forward (and ctx.save_for_backward, for the backward Function's own backward), the rest as
    they are."""
    def setup(ctx, inputs, output):
        if setup_context is not None:
            setup_context(ctx, inputs, output)
        items = (*inputs, output)
        tensors = [a for a in items if isinstance(a, torch.Tensor)]
        ctx.func_items = [_TENSOR if isinstance(a, torch.Tensor) else a for a in items]
        ctx.save_for_forward(*tensors)
        if for_backward:
            ctx.save_for_backward(*tensors)
    return setup


def _saved(ctx):
    """(inputs, output) as _saving kept them."""
    tensors = iter(ctx.saved_tensors)
    items = [next(tensors) if a is _TENSOR else a for a in ctx.func_items]
    return items[:-1], items[-1]


class _Rest:
    """The non-tensor arguments of a call (stride, padding, flags, ...) as one opaque pytree leaf. Under a
    torch.func transform an autograd.Function's arguments are flattened and rebuilt several times a call, and
    a conv's nested tuples of ints made that most of a per-sample gradient's host time: vmap(grad(...)) of a
    tiny conv took 2.2 ms on a 2-core CPU, against 0.57 for F.conv2d."""
    __slots__ = ("args",)

    def __init__(self, args):
        self.args = args


def _leading_tensors(fn: Callable) -> int:
    """How many leading parameters of fn are annotated as tensors (Tensor or Optional[Tensor])."""
    hints = typing.get_type_hints(fn)
    params = list(inspect.signature(fn).parameters)
    return next((i for i, p in enumerate(params) if hints.get(p) not in _TENSOR_HINTS), len(params))


def _packed_function(title: str, kernel: Callable, setup: Callable, backward: Callable, jvp: Callable,
                     vmap: Callable, doc: str = "") -> Callable:
    """An autograd.Function running `kernel`, whose inputs are the kernel's leading tensor arguments (those of
    its parameters annotated as tensors) and one _Rest holding the others; returns its apply, called with the
    kernel's arguments as they are. setup, backward, jvp and vmap see the kernel's arguments too: setup(ctx,
    args, output); backward(ctx, *grads) and jvp(ctx, *tangents) return one gradient or tangent an argument
    (the tangents they get are one an argument too); vmap(info, in_dims, *args), in_dims one an argument."""
    n = _leading_tensors(kernel)

    def rest_of(inputs):  # the arguments the _Rest holds (none where the kernel takes tensors alone)
        return inputs[n].args if len(inputs) > n else ()

    def args_of(inputs):
        return (*inputs[:n], *rest_of(inputs))

    def setup_context(ctx, inputs, output):
        ctx.rest = len(rest_of(inputs))
        setup(ctx, args_of(inputs), output)

    # the tensors' gradients, then None for the _Rest; without one, as they came (for a one-input op, a lone
    # tensor)
    def run_backward(ctx, *grads):
        out = backward(ctx, *grads)
        return (*out[:n], None) if ctx.rest else out

    def run_jvp(ctx, *tangents):
        return jvp(ctx, *tangents[:n], *((None,) * ctx.rest))

    def run_vmap(info, in_dims, *inputs):
        return vmap(info, (*in_dims[:n], *((None,) * len(rest_of(inputs)))), *args_of(inputs))

    apply = type(title, (torch.autograd.Function,), {
        "forward": staticmethod(lambda *inputs: kernel(*args_of(inputs))),
        "setup_context": staticmethod(setup_context),
        "backward": staticmethod(run_backward),
        "jvp": staticmethod(run_jvp),
        "vmap": staticmethod(run_vmap),
        "__doc__": doc,
    }).apply

    def packed_apply(*args):
        return apply(*args[:n], _Rest(args[n:])) if len(args) > n else apply(*args)

    return packed_apply


def func_function(name: str, forward: Callable, setup_context: Callable, backward: Callable,
                  backward_kernel: Callable, rules: FuncRules) -> SimpleNamespace:
    """The op as torch.func transforms need it: autograd.Functions in the style they require (forward without
    ctx, setup_context apart) following `rules`. The backward runs through a Function of its own, so that it
    too can be vmapped (per-sample gradients: vmap(grad(f)); jacrev) and differentiated. Each Function takes its
    non-tensor arguments as one opaque leaf (_Rest); the rules see them as they are. Returns the `fns` the rules
    get: .forward and .backward, calling the two Functions with the kernels' arguments."""
    fns = SimpleNamespace()
    title = name.title().replace("_", "")
    jvp = rules.jvp or _missing(name, "forward-mode derivatives (torch.func.jvp, jacfwd, hessian)")
    backward_jvp = rules.backward_jvp or _missing(name, "second derivatives (torch.func.hessian)")
    double_backward = rules.double_backward or _missing(name, "second derivatives (a grad of a grad)")

    fns.backward = _packed_function(
        f"{title}BackwardFuncFunction", backward_kernel, _saving(None, for_backward=True),
        lambda ctx, *grads: double_backward(fns, *_saved(ctx), grads),
        lambda ctx, *tangents: backward_jvp(fns, *_saved(ctx), tangents),
        lambda info, in_dims, *args: rules.backward_vmap(info, in_dims, fns, *args))
    fns.forward = _packed_function(
        f"{title}FuncFunction", forward, _saving(setup_context, for_backward=False),
        lambda ctx, *grads: backward(ctx, *grads, fns.backward),
        lambda ctx, *tangents: jvp(fns, *_saved(ctx), tangents),
        lambda info, in_dims, *args: rules.vmap(info, in_dims, fns, *args),
        f"pixelops::{name} under torch.func transforms (same kernels; rules of its own).")
    return fns


def differentiable_op(name: str, *, forward: Callable, forward_fake: Callable, backward_kernel: Callable,
                      backward_fake: Callable, setup_context: Callable, backward: Callable,
                      func_rules: Optional[FuncRules] = None) -> SimpleNamespace:
    """pixelops::<name> and pixelops::<name>_backward with autograd registered, and the eager
    autograd.Function sharing the same kernels, setup_context and backward formula.

    Returns a namespace with .op, .backward_op, .Function and .apply (Function.apply for eager calls, without
    its Python preamble: eager_apply), and .differentiable_backward: the backward as a call that a further
    backward can go through (create_graph=True), for Functions of the op's own written elsewhere. Non-tensor
    arguments of `forward` come after the tensors and get no gradient (backward returns None for them).

    With `func_rules` (FuncRules), also .func_apply: the op under torch.func transforms (functorch_active)."""
    op = custom_op(name, forward, forward_fake)
    backward_op = custom_op(f"{name}_backward", backward_kernel, backward_fake)

    def op_backward(ctx, *grads):
        return backward(ctx, *grads, backward_op)

    op.register_autograd(op_backward, setup_context=setup_context)

    func = None if func_rules is None else func_function(name, forward, setup_context, backward, backward_kernel,
                                                         func_rules)
    # The eager Function is written the old way, forward(ctx, *args) calling setup_context itself: on a small
    # tensor that costs some 20 us less per forward+backward than a separate setup_context in PyTorch 2.13,
    # and once_differentiable another 5 us. What once_differentiable guards, a backward run with
    # create_graph=True (a gradient penalty's), takes the backward Function of the torch.func path, whose own
    # backward is the op's double-backward rule; without rules, the backward custom op: it has no autograd of
    # its own, so differentiating the gradient again fails loudly rather than silently giving zero.
    differentiable_backward = backward_op if func is None else func.backward

    def eager_forward(ctx, *args):
        output = forward(*args)
        setup_context(ctx, args, output)
        return output

    def eager_backward(ctx, *grads):
        return backward(ctx, *grads, differentiable_backward if _grad_enabled() else backward_kernel)

    function = type(f"{name.title().replace('_', '')}Function", (torch.autograd.Function,), {
        "forward": staticmethod(eager_forward),
        "backward": staticmethod(eager_backward),
        "__doc__": f"Eager autograd path of pixelops::{name} (same kernels, no dispatcher round trip).",
    })
    return SimpleNamespace(op=op, backward_op=backward_op, Function=function,
                           differentiable_backward=differentiable_backward,
                           apply=eager_apply(function, _leading_tensors(forward)),
                           func_apply=None if func is None else func.forward)


__all__ = ["LIB", "OPS", "compiling", "launch", "check_float_tensor", "has_kernels", "custom_op", "differentiable_op",
           "no_internal_overlap", "eager_apply", "functorch_active", "functionalized", "forward_ad_active",
           "traced_call", "batch_first", "FuncRules", "func_function", "vmap_by_loop", "_C"]
