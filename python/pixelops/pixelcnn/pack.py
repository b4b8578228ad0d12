"""The network as the fused sampling kernels read it (csrc/common/pixelcnn_plan.h): one float32 array of
weights holding only the taps each mask lets through, input-major, and an int64 config of sizes."""
from __future__ import annotations

import numpy as np
import torch

from .. import _C
from .layers import mask

MAX_KERNEL = 15  # kMaxKernel in csrc/common/pixelcnn_plan.h


def taps_matrix(weight: torch.Tensor, mask_type: str) -> torch.Tensor:
    """(Cout, Cin, k, k) -> (taps * Cin, Cout): the unmasked taps in raster order, row = tap * Cin + ci."""
    k = weight.shape[-1]
    keep = mask(k, mask_type).flatten().nonzero().flatten().to(weight.device)
    w = weight.flatten(2).index_select(2, keep)  # (Cout, Cin, taps)
    return w.permute(2, 1, 0).reshape(-1, weight.shape[0])


def config(model) -> np.ndarray:
    return np.array([model.channels, model.n_layers, model.first_kernel, model.kernel, model.head_channels,
                     model.levels, int(bool(model.residual))], dtype=np.int64)


def params(model) -> torch.Tensor:
    parts = [taps_matrix(model.first.weight, "A"), model.first.bias]
    for conv in model.body:
        parts += [taps_matrix(conv.weight, "B"), conv.bias]
    for conv in (model.head1, model.head2):
        parts += [conv.weight.flatten(1).t(), conv.bias]
    return torch.cat([p.detach().reshape(-1) for p in parts]).float().contiguous()


def unsupported(model, device: torch.device):
    """Why the fused sampler cannot run this model on this device, or None when it can."""
    if type(model)._logits is not _base_logits() or type(model).forward is not _base_forward():
        return "its forward is overridden (the fused kernels know only PixelCNN's own network)"
    dtype = model.first.weight.dtype
    if dtype != torch.float32:
        return f"its parameters are {str(dtype).replace('torch.', '')} (the fused kernels run float32 models)"
    if model.first_kernel > MAX_KERNEL or model.kernel > MAX_KERNEL:
        return f"its kernels are larger than {MAX_KERNEL}"
    if device.type == "cuda":
        if not _C.built_with_cuda:
            return "this pixelops build has no CUDA kernels"
    elif device.type != "cpu":
        return f"it lives on {device}, and pixelops runs on cpu and cuda"
    return None


def _base_logits():
    from .model import PixelCNN
    return PixelCNN._logits


def _base_forward():
    from .model import PixelCNN
    return PixelCNN.forward
