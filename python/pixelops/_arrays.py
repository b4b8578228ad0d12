"""Hand-off between numpy arrays / torch tensors and the extension.

The extension sees a numpy array as the tuple ``(data_ptr, shape, strides, dtype_code, device)`` (strides in
elements, device -1 for host memory) and reads a torch tensor's pointer, sizes, strides, dtype and device
straight off it; CUDA work also takes the caller's current stream as an integer. Both cost far less than
building ``__cuda_array_interface__`` dictionaries.

torch is never imported here: a tensor can only reach us if the caller already imported it.
"""
from __future__ import annotations

import sys

import numpy as np

from . import _C

# dtype codes shared with csrc/common/array.h
F32, F64, F16, BF16, I64, I32, U8, B8 = range(8)
CPU = -1

_NUMPY_CODES = {
    np.dtype(np.float32): F32,
    np.dtype(np.float64): F64,
    np.dtype(np.float16): F16,
    np.dtype(np.int64): I64,
    np.dtype(np.int32): I32,
    np.dtype(np.uint8): U8,
    np.dtype(np.bool_): B8,
}
_torch_codes: dict = {}


def _torch():
    return sys.modules.get("torch")


def is_tensor(x) -> bool:
    torch = _torch()
    return torch is not None and isinstance(x, torch.Tensor)


def register_torch():
    """Tells the extension what torch.Tensor and torch's dtypes are, so it reads tensors directly."""
    torch = _torch()
    dtypes = (torch.float32, torch.float64, torch.float16, torch.bfloat16,
              torch.int64, torch.int32, torch.uint8, torch.bool)  # in dtype-code order
    _C.register_torch(torch.Tensor, dtypes)
    _torch_codes.update({d: code for code, d in enumerate(dtypes)})
    _float_dtypes(False)  # (filled now, not by a first call: under torch.compile its guard would see it change)


# What the kernels read as an absent optional array (a null pointer): a missing bias, a gradient not wanted.
ABSENT = (0, (), (), 0, CPU)


def view(x):
    """The extension's description of a numpy array or a torch tensor (no copy). A tensor is its own
    description: the extension reads data_ptr(), shape, stride(), dtype and get_device() off it directly,
    which is the cheaper way on a per-call hot path."""
    if isinstance(x, np.ndarray):
        item = x.itemsize
        return (x.ctypes.data, x.shape, tuple(s // item for s in x.strides), _NUMPY_CODES.get(x.dtype, -1), CPU)
    if not _torch_codes:
        register_torch()
    return x


def stream(x) -> int:
    """The caller's current CUDA stream on x's device, as an integer (0 for host arrays).

    torch._C._cuda_getCurrentRawStream(index) gives the same integer as current_stream(device).cuda_stream
    without building a Stream object (it is what torch's own compiled code calls per launch); the public
    spelling is the fallback where a build lacks it."""
    if isinstance(x, np.ndarray) or not x.is_cuda:
        return 0
    torch = _torch()
    raw = getattr(torch._C, "_cuda_getCurrentRawStream", None)
    if raw is not None:
        return raw(x.get_device())
    return torch.cuda.current_stream(x.device).cuda_stream


# ---- checks shared by every op ---------------------------------------------------------------------------

CPU_FLOATS = ("float32", "float64")
CUDA_FLOATS = ("float32", "float16", "bfloat16", "float64")


def check_choice(value, choices, name: str, where: str):
    """value must be one of `choices` (strings, and None where it is one): else a TypeError where value is not of
    their kind (activation=1), a ValueError where it is (activation='gelu'), naming the argument."""
    if value in choices:
        return
    listed = [repr(c) for c in choices]
    expected = ", ".join(listed[:-1]) + " or " + listed[-1] if len(listed) > 1 else listed[0]
    kind = ValueError if isinstance(value, str) or (value is None and None in choices) else TypeError
    raise kind(f"{where}: '{name}' must be {expected}, got {value!r}")


def as_int(value, name: str, where: str) -> int:
    """value as a Python int, taking numpy integers too; a bool (True would pass as 1) or anything else is a
    TypeError naming the argument. `where` starts the message ("pixelops.conv2d", "PixelCNN")."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{where}: '{name}' must be an int, got {value!r}")
    return int(value)


def dtype_name(x) -> str:
    return str(x.dtype).replace("torch.", "")


def device_name(x) -> str:
    return "cpu" if isinstance(x, np.ndarray) else str(x.device)


MAX_DIMS = 8  # the most dimensions the kernels' array descriptions hold (csrc/common/array.h: kMaxDims)


def check_array(x, name: str, op: str):
    """x must be a numpy array or a dense torch tensor of at most MAX_DIMS dimensions; a numpy array also one the
    kernels can read (check_numpy)."""
    if isinstance(x, np.ndarray):
        check_numpy(x, name, op)
        return
    if not is_tensor(x):
        raise TypeError(f"pixelops.{op}: '{name}' must be a numpy array or a torch tensor, got {type(x).__name__}")
    if x.layout is not _torch().strided:
        raise TypeError(f"pixelops.{op}: '{name}' is a {str(x.layout).replace('torch.', '')} tensor; pixelops "
                        "takes dense (strided) tensors (x.to_dense())")
    _check_ndim(x, name, op)


def _check_ndim(x, name: str, op: str):
    if x.ndim > MAX_DIMS:
        raise ValueError(f"pixelops.{op}: '{name}' has {x.ndim} dimensions; pixelops takes at most {MAX_DIMS}")


def check_numpy(x: np.ndarray, name: str, op: str):
    """The kernels read a numpy array as values of this machine's byte order, whole elements apart (view() hands
    them strides in elements): a byte-swapped array, or a field of a structured array (strides that are not
    whole elements), would otherwise be read wrong or refused with a message that does not name it. Subclasses
    (np.matrix) reshape by rules of their own, so they are refused too."""
    if type(x) is not np.ndarray:
        raise TypeError(f"pixelops.{op}: '{name}' must be a numpy array, got {type(x).__name__} (np.asarray(x))")
    _check_ndim(x, name, op)
    if not x.dtype.isnative:
        raise TypeError(f"pixelops.{op}: '{name}' has dtype {x.dtype.str}, whose byte order is not this "
                        f"machine's; expected native values (x.astype(x.dtype.newbyteorder('=')))")
    if any(s % x.itemsize for s in x.strides):
        raise ValueError(f"pixelops.{op}: '{name}' has strides {x.strides} (bytes), not whole {x.itemsize}-byte "
                         "elements (a field of a structured array?); expected element strides "
                         "(np.ascontiguousarray(x))")


def check_float(x, name: str, op: str):
    """x must hold a floating dtype that x's device has kernels for, on a device this build can run."""
    if isinstance(x, np.ndarray):
        if x.dtype.name not in CPU_FLOATS:
            raise TypeError(f"pixelops.{op}: '{name}' must have dtype float32 or float64 on cpu, got {x.dtype.name}")
        check_numpy(x, name, op)
        return
    check_array(x, name, op)
    # Fast path first: this runs on every call, and attribute reads on a tensor are cheap, .device is not.
    if x.is_cpu:
        if x.dtype not in _float_dtypes(False):
            raise TypeError(f"pixelops.{op}: '{name}' must have dtype {' or '.join(CPU_FLOATS)} on cpu, "
                            f"got {dtype_name(x)}")
        return
    if not x.is_cuda:
        raise ValueError(f"pixelops.{op}: '{name}' is on device {x.device}; pixelops runs on cpu and cuda")
    if x.dtype not in _float_dtypes(True):
        raise TypeError(f"pixelops.{op}: '{name}' must have dtype {' or '.join(CUDA_FLOATS)} on cuda, "
                        f"got {dtype_name(x)}")
    if not _C.built_with_cuda:
        raise RuntimeError(
            f"pixelops.{op}: '{name}' is a CUDA tensor, but this pixelops build has no CUDA kernels "
            "(reinstall where nvcc is on PATH, or with -Ccmake.define.PIXELOPS_CUDA=ON)")


_float_sets: dict = {}


def _float_dtypes(cuda: bool) -> frozenset:
    """torch's float dtypes with kernels (on CUDA, or the CPU's); kept once torch is registered."""
    if not _float_sets:
        torch = _torch()
        _float_sets[False] = frozenset(getattr(torch, n) for n in CPU_FLOATS)
        _float_sets[True] = frozenset(getattr(torch, n) for n in CUDA_FLOATS)
    return _float_sets[cuda]


def check_same_device(op: str, **arrays):
    """All named arrays (None skipped) must be of one kind (numpy or torch) and on one device."""
    items = [(n, a) for n, a in arrays.items() if a is not None]
    (first_name, first), rest = items[0], items[1:]
    for name, a in rest:
        if isinstance(a, np.ndarray) != isinstance(first, np.ndarray):
            raise TypeError(f"pixelops.{op}: '{name}' and '{first_name}' must both be numpy arrays or both torch tensors")
        if device_name(a) != device_name(first):
            raise ValueError(
                f"pixelops.{op}: '{name}' is on {device_name(a)} but '{first_name}' is on {device_name(first)}; "
                "expected one device")


def check_same_dtype(op: str, **arrays):
    items = [(n, a) for n, a in arrays.items() if a is not None]
    (first_name, first), rest = items[0], items[1:]
    for name, a in rest:
        if a.dtype != first.dtype:
            raise TypeError(
                f"pixelops.{op}: '{name}' has dtype {dtype_name(a)} but '{first_name}' has {dtype_name(first)}; "
                "expected one dtype")
