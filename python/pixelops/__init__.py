"""pixelops: handwritten CPU and CUDA kernels for conv nets on images, checked against PyTorch.

The functions mirror torch.nn.functional argument for argument; numpy arrays and torch tensors (CPU or CUDA)
go in, the same kind comes out.
"""
from __future__ import annotations

from . import _C
from ._torch_loader import load_all as _load_all, load_when_torch_imports as _load_when_torch_imports
from ._torch_loader import torch_is_loaded as _torch_is_loaded
from .ops.relu import relu
from .ops.cross_entropy import cross_entropy
from .ops.conv2d import conv2d, masked_conv2d, conv_mask

__version__ = "0.1.0"


def available_backends() -> dict:
    """Which devices pixelops can run on here: {"cpu": True, "cuda": built with CUDA and a GPU is present}."""
    return {"cpu": True, "cuda": bool(_C.built_with_cuda and _C.cuda_device_count() > 0)}


if _torch_is_loaded():
    _load_all()
else:  # (a numpy user who never imports torch never loads it)
    _load_when_torch_imports()

__all__ = ["relu", "available_backends", "__version__"]
__all__ += ["cross_entropy"]
__all__ += ["conv2d", "masked_conv2d", "conv_mask"]


# pixelops.nn and its swap()/patch() need torch: imported on first use, so numpy users never import torch.
_NN_NAMES = ("swap", "patch", "unpatch")


def __getattr__(name):
    # PixelCNN is a torch module too: imported on first use.
    if name == "PixelCNN":
        from .pixelcnn import PixelCNN
        return PixelCNN
    if name == "nn" or name in _NN_NAMES:
        import importlib

        nn = importlib.import_module("pixelops.nn")
        return nn if name == "nn" else getattr(nn, name)
    raise AttributeError(f"module 'pixelops' has no attribute {name!r}")


__all__ += ["PixelCNN"]
