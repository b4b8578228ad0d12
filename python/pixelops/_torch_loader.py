"""Loads the torch side of the ops (pixelops._torch.<op>): at pixelops' import where torch is already loaded,
else as soon as torch is imported (load_when_torch_imports), and in any case the first time a tensor reaches an
op. A numpy user who never imports torch never pays for importing it.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import threading

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


class _TorchImportHook(importlib.abc.MetaPathFinder):
    """Finds torch as the import system would, and has its loader run load_all() once torch's module has run.

    Why: where pixelops is imported before torch (`import pixelops` sorts before `import torch`), the torch side
    would otherwise load at the first call with a tensor, and where that call is inside a function that
    torch.compile traces, the import is a graph break (an error under fullgraph=True): Dynamo does not trace
    importlib. Loading it when torch arrives makes both import orders alike. The hook stays until torch's module
    has run: a library that only asks whether torch is installed (importlib.util.find_spec) gets torch's spec
    and leaves it in place."""

    def __init__(self):
        self._finding = threading.local()  # (set while find_spec below asks the other finders)

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "torch" or getattr(self._finding, "on", False):
            return None
        self._finding.on = True
        try:
            spec = importlib.util.find_spec("torch")
        finally:
            self._finding.on = False
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec  # (None: no torch; the import raises as usual)
        spec.loader = _LoadAfterTorch(spec, spec.loader)
        return spec


class _LoadAfterTorch(importlib.abc.Loader):
    """torch's own loader, then load_all(). Once torch's module has run, the module's __loader__ and __spec__
    get the original loader back, so that nothing after the import sees this wrapper; while it runs, any other
    attribute (get_source, get_resource_reader, ...) is the original's."""

    def __init__(self, spec, loader):
        self._spec, self._loader = spec, loader

    def __getattr__(self, name):
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        try:
            self._loader.exec_module(module)
        finally:
            self._spec.loader = self._loader
            if getattr(module, "__loader__", None) is self:
                module.__loader__ = self._loader
        _remove_hook()  # (torch has run; after an import that failed, the hook stays for the next try)
        try:
            load_all()
        except Exception:  # (never fail torch's import for pixelops: the first tensor call loads again and raises)
            pass


_hook: list = []


def _remove_hook():
    for h in _hook:
        if h in sys.meta_path:
            sys.meta_path.remove(h)
    _hook.clear()


def load_when_torch_imports():
    """Has a later `import torch` load pixelops' torch side (see _TorchImportHook)."""
    if not _hook:
        _hook.append(_TorchImportHook())
        sys.meta_path.insert(0, _hook[0])
