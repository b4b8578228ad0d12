"""_C.entry_points, the table of conv2d entry points that C++ code in another shared object calls the core
through (benchmarks/torch_node): its capsule's name, ABI number and pointers, as csrc/entry_points.h lays them
out."""
import ctypes
import re
from pathlib import Path

import pixelops._C as core

_CAPSULE_NAME = b"pixelops._C.entry_points"


def _header_abi() -> int:
    text = (Path(__file__).resolve().parents[1] / "csrc" / "entry_points.h").read_text()
    return int(re.search(r"kEntryPointsAbi = (\d+);", text).group(1))


class _EntryPoints(ctypes.Structure):  # csrc/entry_points.h's EntryPoints
    _fields_ = [("abi", ctypes.c_int), ("conv2d_forward", ctypes.c_void_p * 2),
                ("conv2d_backward", ctypes.c_void_p * 2)]


def _table() -> _EntryPoints:
    get = ctypes.pythonapi.PyCapsule_GetPointer
    get.restype, get.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    return _EntryPoints.from_address(get(core.entry_points, _CAPSULE_NAME))


def test_entry_points_table():
    table = _table()
    assert table.abi == _header_abi()
    for pair in (table.conv2d_forward, table.conv2d_backward):
        assert pair[0]  # the CPU kernels: always built
        assert bool(pair[1]) == bool(core.built_with_cuda)
    assert table.conv2d_forward[0] != table.conv2d_backward[0]
