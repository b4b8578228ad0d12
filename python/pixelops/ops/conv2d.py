"""pixelops.conv2d, pixelops.masked_conv2d and pixelops.conv_mask: torch.nn.functional.conv2d on pixelops'
kernels, and PixelCNN's masked convolution that skips the masked taps instead of multiplying them by zero.

All checks live here (in torch's words, naming the argument); the kernels trust what they are given. The
kernels see a convolution as: stride, padding (top, bottom, left, right), dilation, groups, and the number of
active taps, which are always a row-major prefix of the kernel (all of them, or a PixelCNN mask).
"""
from __future__ import annotations

import numpy as np

from .. import _C
from .._arrays import (ABSENT, as_int, check_array, check_choice, check_float, check_same_device, check_same_dtype,
                       view)
from .._torch_loader import torch_ops
from .checked import CheckedCalls

ACTIVATIONS = (None, "relu")
_INT32_MAX = 2 ** 31 - 1
MASK_TYPES = ("A", "B")


def _pair(value, name: str, op: str) -> tuple:
    """An int or a pair of ints, as torch's conv arguments take them."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"pixelops.{op}: '{name}' must be an int or a pair of ints, got {value!r}")
    if isinstance(value, (int, np.integer)):
        return int(value), int(value)
    try:
        items = tuple(value)
    except TypeError:
        raise TypeError(f"pixelops.{op}: '{name}' must be an int or a pair of ints, got {value!r}") from None
    if len(items) == 1:
        items = items * 2
    if len(items) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in items):
        raise TypeError(f"pixelops.{op}: '{name}' must be an int or a pair of ints, got {value!r}")
    return int(items[0]), int(items[1])


def mask_taps(kernel_size, mask_type: str = "B", op: str = "conv_mask") -> int:
    """How many taps a PixelCNN mask keeps, in row-major order: the rows above the centre, then the centre
    row up to the centre (mask "B" keeps the centre, "A" does not)."""
    kh, kw = _pair(kernel_size, "kernel_size", op)
    check_choice(mask_type, MASK_TYPES, "mask_type", f"pixelops.{op}")
    if kh < 1 or kw < 1 or kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"pixelops.{op}: masked convolutions need an odd kernel size, got {kh}x{kw} "
                         "(the weight's last two dimensions)")
    return (kh // 2) * kw + kw // 2 + (1 if mask_type == "B" else 0)


def conv_mask(kernel_size, mask_type: str = "B", *, dtype=None, device=None):
    """The PixelCNN mask of a kernel, shape (kH, kW): 1 on the taps a masked conv uses, 0 elsewhere.

    ``masked_conv2d(x, w, ...)`` equals ``F.conv2d(x, w * conv_mask(w.shape[-2:], mask_type), ...)``.
    A torch tensor (float32 by default, or ``dtype``/``device``), or a numpy array when ``dtype`` is a numpy
    dtype.
    """
    kh, kw = _pair(kernel_size, "kernel_size", "conv_mask")
    keep = mask_taps((kh, kw), mask_type, "conv_mask")
    if dtype is not None and not _is_torch_dtype(dtype):
        if device is not None:
            raise ValueError(f"pixelops.conv_mask: 'device' ({device!r}) goes with a torch dtype; a numpy dtype "
                             f"({dtype!r}) gives a numpy array")
        try:
            np_dtype = np.dtype(dtype)
        except TypeError:
            np_dtype = None
        if np_dtype is None or np_dtype.kind not in "fiub":  # (an object array of bools is no mask)
            raise TypeError(f"pixelops.conv_mask: 'dtype' must be a numeric numpy dtype or a torch dtype, got "
                            f"{dtype!r}")
        return (np.arange(kh * kw) < keep).reshape(kh, kw).astype(np_dtype)
    import torch

    # made by torch itself: under torch.compile a numpy array becomes a tensor, and torch.tensor() of one warns
    return (torch.arange(kh * kw, device=device) < keep).reshape(kh, kw).to(dtype or torch.float32)


def _is_torch_dtype(dtype) -> bool:
    return type(dtype).__module__ == "torch" and type(dtype).__name__ == "dtype"


def _setup(input, weight, bias, stride, padding, dilation, groups, activation, allow_tf32, op, mask_type=None):
    """Checks every argument; returns (params, output shape) with params the kernels' tuple
    (stride, padding4, dilation, groups, ntaps, relu, allow_tf32)."""
    check_float(input, "input", op)
    check_float(weight, "weight", op)
    if bias is not None:
        check_float(bias, "bias", op)
    check_same_device(op, input=input, weight=weight, bias=bias)
    check_same_dtype(op, input=input, weight=weight, bias=bias)
    if input.ndim != 4:
        raise ValueError(f"pixelops.{op}: 'input' must be 4-D (N, C, H, W) or 3-D (C, H, W), "
                         f"got shape {tuple(input.shape)}")
    if weight.ndim != 4:
        raise ValueError(f"pixelops.{op}: 'weight' must be 4-D (out_channels, in_channels/groups, kH, kW), "
                         f"got shape {tuple(weight.shape)}")
    groups = as_int(groups, "groups", f"pixelops.{op}")
    if groups < 1:
        raise ValueError(f"pixelops.{op}: 'groups' must be at least 1, got {groups}")
    n, c, h, w = (int(s) for s in input.shape)
    cout, cg, kh, kw = (int(s) for s in weight.shape)
    if cout % groups:
        raise ValueError(f"pixelops.{op}: 'weight' has {cout} output channels, not divisible by groups={groups}")
    if cg * groups != c:
        raise ValueError(f"pixelops.{op}: 'input' has {c} channels but 'weight' expects {cg} per group x "
                         f"groups={groups} = {cg * groups}")
    if cg == 0 or cout == 0 or kh == 0 or kw == 0:
        raise ValueError(f"pixelops.{op}: 'weight' must have no empty dimension, got shape {tuple(weight.shape)}")
    if bias is not None and (bias.ndim != 1 or int(bias.shape[0]) != cout):
        raise ValueError(f"pixelops.{op}: 'bias' must have shape ({cout},), got {tuple(bias.shape)}")
    check_choice(activation, ACTIVATIONS, "activation", f"pixelops.{op}")
    sh, sw = _pair(stride, "stride", op)
    dh, dw = _pair(dilation, "dilation", op)
    if sh < 1 or sw < 1:
        raise ValueError(f"pixelops.{op}: 'stride' must be at least 1, got {stride!r}")
    if dh < 1 or dw < 1:
        raise ValueError(f"pixelops.{op}: 'dilation' must be at least 1, got {dilation!r}")
    for name, pair in (("stride", (sh, sw)), ("dilation", (dh, dw))):
        if max(pair) > _INT32_MAX:  # (the kernels index with 32-bit ints)
            raise ValueError(f"pixelops.{op}: '{name}' must be at most 2**31 - 1, got {pair}")
    span_h, span_w = dh * (kh - 1), dw * (kw - 1)
    if isinstance(padding, str):
        if padding == "valid":
            pads = (0, 0, 0, 0)
        elif padding == "same":
            if sh != 1 or sw != 1:
                raise ValueError(f"pixelops.{op}: padding='same' needs stride 1, got stride={stride!r}")
            # torch pads the extra row/column (even kernels) at the bottom/right
            pads = (span_h // 2, span_h - span_h // 2, span_w // 2, span_w - span_w // 2)
        else:
            raise ValueError(f"pixelops.{op}: 'padding' must be 'same', 'valid', an int or a pair, got {padding!r}")
    else:
        ph, pw = _pair(padding, "padding", op)
        if ph < 0 or pw < 0:
            raise ValueError(f"pixelops.{op}: 'padding' must not be negative, got {padding!r}")
        if max(ph, pw) > _INT32_MAX:
            raise ValueError(f"pixelops.{op}: 'padding' must be at most 2**31 - 1, got {padding!r}")
        pads = (ph, ph, pw, pw)
    hp, wp = h + pads[0] + pads[1], w + pads[2] + pads[3]
    if hp < span_h + 1 or wp < span_w + 1:
        raise ValueError(f"pixelops.{op}: the kernel ({kh}x{kw}, dilation {dh}x{dw}) is larger than the padded "
                         f"input ({hp}x{wp}); 'weight' too large for 'input'")
    oh, ow = (hp - span_h - 1) // sh + 1, (wp - span_w - 1) // sw + 1
    # A stride past the padded input gives one output row (column), as the smallest such stride does; the
    # kernels get that one, since some of their loops run over the stride's phases (a stride of 2**31 took 8 s).
    # (No test of the output size: under torch.compile with mark_dynamic, it would fix the input size.)
    sh, sw = min(sh, hp), min(sw, wp)
    ntaps = kh * kw if mask_type is None else mask_taps((kh, kw), mask_type, op)
    if allow_tf32 is not None and not isinstance(allow_tf32, bool):
        raise TypeError(f"pixelops.{op}: 'allow_tf32' must be None, True or False, got {allow_tf32!r}")
    params = ((sh, sw), pads, (dh, dw), groups, ntaps, activation == "relu", allow_tf32)
    return params, (n, cout, oh, ow)


# Setups already checked, by call signature: a layer called again with the same shapes, dtypes, devices, layouts
# and options skips the checks, which cost about half of a small eager call (some 7 us of 15 on a 2-core CPU).
# The options are keyed with their types, so that a value the checks refuse never matches one they accepted
# (True == 1 and 1.0 == 1 in a dict), and a tuple option must hold plain ints to be keyed at all. Checked
# every time instead: a call with an unhashable option (a list), a tuple holding anything but ints, or an
# argument without the shape, dtype and device of an array (the checks then name it), and numpy calls. The key
# is one flat tuple built inline: this runs on every call.
_SETUPS = CheckedCalls()


def _setup_cached(input, weight, bias, stride, padding, dilation, groups, activation, allow_tf32, op, mask_type):
    kinds = (type(stride), type(padding), type(dilation), type(groups), type(allow_tf32))
    try:
        if tuple in kinds and not all(type(v) is int for a in (stride, padding, dilation) if type(a) is tuple
                                      for v in a):
            raise TypeError
        key = (op, stride, padding, dilation, groups, activation, allow_tf32, mask_type, kinds,
               input.shape, input.dtype, input.device, input.layout, weight.shape, weight.dtype, weight.device,
               weight.layout, None if bias is None else (bias.shape, bias.dtype, bias.device, bias.layout))
        hit = _SETUPS.get(key)
    except (AttributeError, TypeError):
        return _setup(input, weight, bias, stride, padding, dilation, groups, activation, allow_tf32, op, mask_type)
    if hit is None:
        hit = _SETUPS.remember(key, _setup(input, weight, bias, stride, padding, dilation, groups, activation,
                                           allow_tf32, op, mask_type))
    return hit


def _numpy_run(input, weight, bias, stride, padding, dilation, groups, activation, allow_tf32, op, mask_type):
    unbatched = input.ndim == 3
    if unbatched:
        input = input[None]
    # checked every call: the cache's key holds shapes and dtypes, not the strides check_numpy reads (a field of
    # a structured array has a contiguous twin of the same shape and dtype)
    params, shape = _setup(input, weight, bias, stride, padding, dilation, groups, activation, allow_tf32, op,
                           mask_type)
    (sh, sw), pads, (dh, dw), groups, ntaps, relu, _ = params
    try:
        out = np.empty(shape, dtype=input.dtype)
    except (ValueError, MemoryError) as e:  # (numpy's own message names neither the op nor the arguments)
        raise type(e)(f"pixelops.{op}: the output, shape {shape}, is too large to allocate (check 'padding', "
                      "'stride' and 'dilation')") from e
    _C.conv2d_forward(view(input), view(weight), view(bias) if bias is not None else ABSENT, view(out),
                      sh, sw, pads[0], pads[2], dh, dw, groups, ntaps, relu, False, 0)
    return out[0] if unbatched else out


# pixelops._torch.conv2d.run, bound when that module is imported (pixelops.load_all does it as soon as torch is
# loaded: a value that changed at a first call would make torch.compile compile the caller twice), else by the
# first tensor call. numpy users never import torch. Tensors take that path whole: one call from here, the
# per-call work of an eager layer.
_tensor_run = None


def _run(input, weight, bias, stride, padding, dilation, groups, activation, allow_tf32, op, mask_type=None):
    global _tensor_run
    if isinstance(input, np.ndarray):
        return _numpy_run(input, weight, bias, stride, padding, dilation, groups, activation, allow_tf32, op,
                          mask_type)
    if _tensor_run is None:
        check_array(input, "input", op)
        _tensor_run = torch_ops("conv2d").run
    return _tensor_run(input, weight, bias, stride, padding, dilation, groups, activation, allow_tf32, op,
                       mask_type)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, activation=None,
           allow_tf32=None):
    """2-D convolution of NCHW input, as ``torch.nn.functional.conv2d`` (same arguments and defaults).

    ``activation="relu"`` applies ReLU in the kernel's output write (and its gradient in the backward).
    On CUDA, float32 uses TF32 tensor cores only when ``allow_tf32`` is True, or when it is None and
    ``torch.backends.cudnn.allow_tf32`` is (as cuDNN does); then the GEMM kernels use them, while the forward
    and weight gradient of a layer with few input channels per group (channels x taps up to 64), direct
    kernels, stay in full float32 (as does its grad_input under a fused ReLU). numpy arrays in give a numpy
    array out (forward).
    """
    return _run(input, weight, bias, stride, padding, dilation, groups, activation, allow_tf32, "conv2d")


def masked_conv2d(input, weight, bias=None, mask_type="B", stride=1, padding="same", dilation=1, groups=1, *,
                  activation=None, allow_tf32=None):
    """PixelCNN's masked convolution: ``F.conv2d(input, weight * conv_mask(kernel, mask_type), bias, ...)``.

    The mask keeps the kernel rows above the centre and the centre row left of the centre, plus the centre
    itself for mask type "B". Masked taps are skipped, not multiplied by zero (a 3x3 mask-B conv does 5/9 of
    the work); the gradient reaching them is exactly zero. Odd kernel sizes only.
    """
    check_choice(mask_type, MASK_TYPES, "mask_type", "pixelops.masked_conv2d")
    return _run(input, weight, bias, stride, padding, dilation, groups, activation, allow_tf32, "masked_conv2d",
                mask_type)
