"""pixelops.cross_entropy: torch.nn.functional.cross_entropy on pixelops' fused softmax-cross-entropy kernels."""
from __future__ import annotations

import operator

import numpy as np

from .. import _C
from .._arrays import ABSENT, check_array, check_choice, check_float, check_same_device, dtype_name, is_tensor, view
from .._torch_loader import torch_ops
from .checked import CheckedCalls

OP = "cross_entropy"
REDUCTIONS = {"none": 0, "mean": 1, "sum": 2}  # torch's Reduction enum, as the kernels take it
NO_ARRAY = ABSENT
_INDEX_DTYPES = ("int64", "uint8")  # PyTorch takes Long or Byte class indices
# Class probabilities of these dtypes are taken with logits of any (kernel) dtype, as torch promotes them: the
# loss in torch.result_type(input, target). (torch has no promotion for its float8 types, and no numpy long
# double; numpy has no bfloat16.)
_PROB_DTYPES = ("float16", "bfloat16", "float32", "float64")
_NUMPY_PROB_DTYPES = ("float16", "float32", "float64")
_AUTOCAST_ARGUMENTS = ("input", "weight")  # the names of the tensors autocast casts, in its messages


def cross_entropy(input, target, weight=None, ignore_index: int = -100, reduction: str = "mean",
                  label_smoothing: float = 0.0, *, inplace_backward: bool = False):
    """Softmax cross-entropy between logits and targets, as ``torch.nn.functional.cross_entropy``.

    input: logits of shape (C), (N, C) or (N, C, d1, ..., dk), the classes on dimension 1 (any strides: the
    (N, C, H, W) case is read in place, without a transposed copy). target: class indices (int64 or uint8) of
    shape (), (N) or (N, d1, ..., dk), or class probabilities of input's shape (float16, bfloat16, float32 or
    float64, whatever input's dtype: the loss then has torch's promoted dtype, torch.result_type(input, target),
    as F.cross_entropy's; the kernels run in input's dtype on the probabilities converted to it, and each
    gradient comes in the dtype of what it belongs to). weight: (C) class weights, of input's dtype.
    ignore_index, reduction ('none', 'mean', 'sum') and label_smoothing as in PyTorch, including its weighted mean
    and the NaN of a mean over targets that are all ignored (also for an unbatched input whose one target is
    ignored, on both devices, as PyTorch on the CPU; PyTorch's CUDA kernel returns 0 there).

    numpy arrays in, numpy array out (CPU, float32/float64 logits; probabilities also float16, the loss in
    numpy's promoted dtype, which is torch's for these); torch tensors in, a tensor out (CPU: float32,
    float64; CUDA: float32, float16, bfloat16 with float32 arithmetic, float64), differentiable through
    pixelops' own kernels: the forward pass writes the gradient as it computes the loss and backward only scales
    it. The class weights get no gradient (a weight that requires grad is refused).

    inplace_backward=True (tensors only) writes that gradient into input's own memory instead of a new buffer,
    saving one logits-sized allocation (where that memory holds each logit once: not for an expanded view, which
    gets a buffer as without it). input's values are gone after the call; autograd is told, so a
    backward that needs them raises instead of reading gradients. Use it only when nothing else needs the
    logits. Under torch.compile the call goes through the functional custom op pixelops::cross_entropy and
    inplace_backward has no effect, nor under torch.func transforms (functionalize included: the logits
    keep their values). Class-probability targets that require grad get their gradient too
    (eagerly; not under torch.compile). Not supported: double backward (a backward with create_graph=True
    raises). Unlike torch's, no size_average / reduce arguments (pixelops.nn.functional.cross_entropy takes
    them, in torch's places).

    On CUDA a class index out of range is flagged by the kernel and raised as IndexError after it (a host
    sync, skipped while a CUDA graph is being captured); with inplace_backward=True the logits may already be
    overwritten by then.
    """
    checks = _checks
    if is_tensor(input):  # torch.autocast's policy: cross-entropy in float32 (pixelops/_torch/autocast.py)
        # The target is left out: class indices are not cast, and class probabilities of any dtype are promoted
        # with the logits by the torch side (pixelops/_torch/cross_entropy.py: _promoted), which gives what
        # autocast's cast and torch's promotion give together (float16 probabilities: float32; float64 ones,
        # which autocast leaves alone: float64, where the cast's check refused them for meeting float32 logits,
        # though torch takes them).
        input, weight = torch_ops("autocast").float32(OP, _AUTOCAST_ARGUMENTS, input, weight)
        if not torch_ops("common").compiling():  # (traced calls keep no cache in the graph)
            checks = _checks_cached
    ignore_index, red, label_smoothing, probs = checks(input, target, weight, ignore_index, reduction,
                                                       label_smoothing)

    if isinstance(input, np.ndarray):
        if inplace_backward:
            raise ValueError(f"pixelops.{OP}: inplace_backward=True needs torch tensors (numpy arrays have no backward)")
        if probs and target.dtype != input.dtype:
            # Promoted as numpy promotes (the dtype torch gives the same arrays, through torch.from_numpy), and
            # computed as the tensor path computes it, in input's dtype, so both paths give the same numbers:
            # no gradient or inplace_backward here for a mixed pair to refuse.
            loss = _numpy_forward(input, target.astype(input.dtype), weight, ignore_index, red, label_smoothing,
                                  probs)
            return loss.astype(np.result_type(input.dtype, target.dtype))
        return _numpy_forward(input, target, weight, ignore_index, red, label_smoothing, probs)
    return torch_ops(OP).cross_entropy(input, target, weight, ignore_index, red, label_smoothing,
                                       bool(inplace_backward))


def _checks(input, target, weight, ignore_index, reduction, label_smoothing):
    """The argument checks, each raising the clear error; returns (ignore_index, reduction code, label_smoothing,
    whether target holds class probabilities)."""
    check_float(input, "input", OP)
    check_array(target, "target", OP)
    if weight is not None:
        check_float(weight, "weight", OP)
    if not _same_tensor_device(input, target, weight):  # the cheap test first; the full one words the error
        check_same_device(OP, input=input, target=target, weight=weight)
    red = REDUCTIONS.get(reduction) if isinstance(reduction, str) else None
    if red is None:
        check_choice(reduction, tuple(REDUCTIONS), "reduction", f"pixelops.{OP}")
    try:
        if isinstance(ignore_index, (bool, np.bool_)):  # (operator.index takes True as 1; torch refuses it)
            raise TypeError
        ignore_index = operator.index(ignore_index)
    except TypeError:
        raise TypeError(f"pixelops.{OP}: 'ignore_index' must be an integer, got {type(ignore_index).__name__}") from None
    if not -2 ** 63 <= ignore_index < 2 ** 63:  # (the kernels compare it with 64-bit class indices)
        raise ValueError(f"pixelops.{OP}: 'ignore_index' must fit in 64 bits, got {ignore_index}")
    try:
        if isinstance(label_smoothing, (str, bytes, bool)):  # (float() reads '0.1' and True; torch refuses them)
            raise TypeError
        label_smoothing = float(label_smoothing)
    except (TypeError, ValueError):
        raise TypeError(f"pixelops.{OP}: 'label_smoothing' must be a number, got {label_smoothing!r}") from None
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"pixelops.{OP}: 'label_smoothing' must be between 0.0 and 1.0, got {label_smoothing}")

    shape = tuple(input.shape)
    if len(shape) == 0:
        raise ValueError(f"pixelops.{OP}: 'input' must have shape (C), (N, C) or (N, C, d1, ..., dk), got a 0-d array")
    classes = shape[0] if len(shape) == 1 else shape[1]
    if classes == 0:
        raise ValueError(f"pixelops.{OP}: 'input' has no classes (size 0 on its class dimension)")
    probs = _is_floating(target)
    if probs:
        if target.dtype != input.dtype and not _is_prob_dtype(target):  # (torch refuses these too)
            names = _NUMPY_PROB_DTYPES if isinstance(target, np.ndarray) else _PROB_DTYPES
            raise TypeError(f"pixelops.{OP}: class-probability 'target' must have dtype {', '.join(names[:-1])} "
                            f"or {names[-1]}, got {dtype_name(target)}")
        if tuple(target.shape) != shape:
            raise ValueError(f"pixelops.{OP}: class-probability 'target' must have input's shape {shape}, "
                             f"got {tuple(target.shape)}")
        if ignore_index != -100:  # (as torch: there is no class index to ignore)
            raise ValueError(f"pixelops.{OP}: 'ignore_index' is not supported with class-probability targets, "
                             f"got ignore_index={ignore_index}")
    else:
        if tuple(target.shape) == shape:  # torch reads a target of input's shape as probabilities, by its shape
            raise TypeError(f"pixelops.{OP}: a 'target' of input's shape {shape} holds class probabilities, which "
                            f"must be floating (float16, bfloat16, float32 or float64), got dtype {dtype_name(target)}")
        if not _is_index_dtype(target):
            raise TypeError(f"pixelops.{OP}: 'target' must hold class indices (int64 or uint8) or class "
                            f"probabilities (floating), got dtype {dtype_name(target)}")
        expected = shape[:1] + shape[2:] if len(shape) > 1 else ()
        if tuple(target.shape) != expected:
            raise ValueError(f"pixelops.{OP}: class-index 'target' must have shape {expected} for input of shape "
                             f"{shape}, got {tuple(target.shape)}")
    if weight is not None:
        if tuple(weight.shape) != (classes,):
            raise ValueError(f"pixelops.{OP}: 'weight' must have shape ({classes},), one weight per class, "
                             f"got {tuple(weight.shape)}")
        if weight.dtype != input.dtype:
            raise TypeError(f"pixelops.{OP}: 'weight' must have input's dtype {dtype_name(input)}, "
                            f"got {dtype_name(weight)}")
    return ignore_index, red, label_smoothing, probs


# _checks' answers for eager tensor calls, by call signature (types, shapes, dtypes and devices of the tensors,
# and the other arguments; the target's dtype among them, so a float64 target's answer is not one for a float8
# or integer target of the same shape): a call repeats the checks only for a signature it has not met (they were
# most of a small call's host time: 17 us for the forward of an 8 x 10 loss on a 2-core CPU, against torch's 4.5).
_CHECKED = CheckedCalls()


def _signature(t):
    return None if t is None else (type(t), t.shape, t.dtype, t.device, t.layout)


def _checks_cached(input, target, weight, ignore_index, reduction, label_smoothing):
    if not (is_tensor(input) and is_tensor(target)):
        return _checks(input, target, weight, ignore_index, reduction, label_smoothing)
    try:
        key = (_signature(input), _signature(target), _signature(weight), type(ignore_index), ignore_index,
               type(reduction), reduction, type(label_smoothing), label_smoothing)
        hit = _CHECKED.get(key)
    except (AttributeError, TypeError):  # an unhashable or odd argument: the checks say what is wrong
        return _checks(input, target, weight, ignore_index, reduction, label_smoothing)
    if hit is None:
        hit = _CHECKED.remember(key, _checks(input, target, weight, ignore_index, reduction, label_smoothing))
    return hit


def _same_tensor_device(x, target, weight) -> bool:
    """True when all are torch tensors on one device (reads ints off the tensors; str(device) is slow)."""
    if not (is_tensor(x) and is_tensor(target) and (weight is None or is_tensor(weight))):
        return False
    for a in (target, weight):
        if a is not None and (a.is_cpu != x.is_cpu or a.get_device() != x.get_device()):
            return False
    return True


def _is_index_dtype(t) -> bool:
    if isinstance(t, np.ndarray):
        return t.dtype.name in _INDEX_DTYPES
    return t.dtype in _index_torch_dtypes()


def _is_prob_dtype(t) -> bool:
    """A class-probability dtype that is promoted with any logits' dtype (_PROB_DTYPES)."""
    if isinstance(t, np.ndarray):
        return t.dtype.name in _NUMPY_PROB_DTYPES
    return t.dtype in _prob_torch_dtypes()


_torch_dtype_sets: list = []  # [class-index dtypes, class-probability dtypes], as torch dtypes


def _index_torch_dtypes():
    """torch's class-index dtypes, and (_prob_torch_dtypes) the class-probability ones; kept from the first call,
    or from pixelops._torch.cross_entropy's import (so that torch.compile's guards never see the lists change
    between two calls)."""
    if not _torch_dtype_sets:
        import torch  # a tensor reached us, so torch is loaded already

        _torch_dtype_sets.append(frozenset((torch.int64, torch.uint8)))
        _torch_dtype_sets.append(frozenset(getattr(torch, name) for name in _PROB_DTYPES))
    return _torch_dtype_sets[0]


def _prob_torch_dtypes():
    _index_torch_dtypes()
    return _torch_dtype_sets[1]


def _is_floating(a) -> bool:
    if isinstance(a, np.ndarray):
        return a.dtype.kind == "f"
    return is_tensor(a) and a.is_floating_point()


def layout(shape):
    """(N, C, S, loss shape for 'none') of logits of this shape: S is the product of the spatial sizes."""
    if len(shape) == 1:
        return 1, shape[0], 1, ()
    spatial = 1
    for d in shape[2:]:
        spatial *= d
    return shape[0], shape[1], spatial, shape[:1] + shape[2:]


def _numpy_forward(x, target, weight, ignore_index, red, eps, probs):
    N, C, S, none_shape = layout(x.shape)
    x3 = x.reshape(N, C, S)  # a view where the strides allow one, else a copy
    t = target.reshape(N, C, S) if probs else target.reshape(N, S)
    w_arr = None if weight is None else np.ascontiguousarray(weight)  # held: the kernel reads its memory
    w = NO_ARRAY if w_arr is None else view(w_arr)
    loss = np.empty((N, S) if red == 0 else (), dtype=x.dtype)
    _C.cross_entropy_forward(view(x3), view(t), w, view(loss), NO_ARRAY, NO_ARRAY, ignore_index, red, eps, 0)
    return loss.reshape(none_shape) if red == 0 else loss
