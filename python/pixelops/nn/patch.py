"""pixelops.patch(): torch.nn.functional.conv2d, relu and cross_entropy pointed at pixelops.

    pixelops.patch()                 # from now on (until pixelops.unpatch())
    with pixelops.patch():           # inside the block only; restored on exit, also after an exception
        ...

Code that calls the functionals (torch.nn.Conv2d, ReLU and CrossEntropyLoss do too) then runs pixelops
wherever pixelops has kernels for the arguments; anything else (other dtypes, probability targets) goes to
torch's own function, unchanged. Patches nest: the originals come back when the outermost one ends.
"""
from __future__ import annotations

import functools
import threading

import torch.nn.functional as F
from torch.compiler import is_compiling

from .dropins import TABLE

_lock = threading.Lock()
_depth = 0
_installed: dict = {}  # functional name -> (torch's original, the patched function put in its place)
# Bumped by unpatch(): a patch made before it has nothing left to restore (its restore() and the end of its
# `with` block do nothing), so it cannot undo a patch made after.
_generation = 0
# Set while a patched call runs pixelops: a torch functional reached from inside pixelops is torch's own.
_inside = threading.local()


_NOT_INSTALLED = (None, None)


def _patched(row, original):
    takes, run, name = row.takes, row.function, row.functional

    @functools.wraps(original)
    def call(*args, **kwargs):
        if not takes(*args, **kwargs):
            return original(*args, **kwargs)
        if is_compiling():  # Dynamo traces this function: no thread-local state in the graph
            return run(*args, **kwargs)
        # torch's own function inside pixelops, and once this patch has ended: a reference to the patched function
        # kept past its patch (a model built inside the block that stored F.relu) is torch's again
        if getattr(_inside, "active", False) or _installed.get(name, _NOT_INSTALLED)[1] is not call:
            return original(*args, **kwargs)
        _inside.active = True
        try:
            return run(*args, **kwargs)
        finally:
            _inside.active = False

    call.__pixelops_original__ = original
    return call


class patch:
    """Points torch.nn.functional's conv2d, relu and cross_entropy at pixelops now; restores them on
    restore() (or pixelops.unpatch(), or leaving the `with` block)."""

    def __init__(self):
        global _depth
        with _lock:
            if _depth == 0:
                for row in TABLE:
                    original = getattr(F, row.functional)
                    patched = _patched(row, original)
                    _installed[row.functional] = (original, patched)
                    setattr(F, row.functional, patched)
            _depth += 1
            self._generation = _generation
        self._active = True

    def restore(self):
        global _depth
        with _lock:
            if not self._active:
                return
            self._active = False
            if self._generation != _generation:  # unpatch() ended it already
                return
            _depth -= 1
            if _depth == 0:
                _put_back()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.restore()


def _put_back():
    """torch's functions back where pixelops' are still in place (a function someone else set there since, over
    pixelops', is theirs to keep)."""
    for name, (original, patched) in _installed.items():
        if getattr(F, name) is patched:
            setattr(F, name, original)
    _installed.clear()


def unpatch():
    """Undoes every pixelops.patch() still in force."""
    global _depth, _generation
    with _lock:
        _put_back()
        _depth = 0
        _generation += 1


def is_patched() -> bool:
    return _depth > 0
