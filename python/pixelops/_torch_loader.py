"""Loads the torch side of an op (pixelops._torch.<op>) the first time a tensor reaches it.

A tensor can only arrive once the caller has imported torch, so numpy users never pay for importing it.
"""
from __future__ import annotations

import importlib
import sys

_loaded: dict = {}


def torch_ops(name: str):
    mod = _loaded.get(name)
    if mod is None:
        mod = _loaded[name] = importlib.import_module(f"pixelops._torch.{name}")
    return mod


def load_all():
    """Registers every torch.library op now (done at import when torch is already loaded, and by pixelops.nn),
    so that torch.compile never meets a first-time import inside a traced function."""
    from ._torch import OP_MODULES
    for name in OP_MODULES:
        torch_ops(name)
    torch_ops("autocast")  # the autocast policy the ops' entry points call (pixelops/_torch/autocast.py)
    torch_ops("common")    # compiling(), which cross_entropy's entry point asks before its cache


def torch_is_loaded() -> bool:
    return "torch" in sys.modules
