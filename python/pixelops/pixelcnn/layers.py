"""The pixelops ops the PixelCNN is built from, in one place: masked convolution and 1x1 convolution (with
ReLU fused into the kernel's output write where the network applies one) and cross-entropy."""
from __future__ import annotations

import torch

import pixelops


def mask(kernel: int, mask_type: str, device=None, dtype=None) -> torch.Tensor:
    """The (kernel, kernel) PixelCNN mask of one input channel: every row above the centre, and the centre row
    left of the centre (type "A") or up to and including it (type "B"). Same taps as mask_taps in
    csrc/common/pixelcnn_plan.h and pixelops.conv_mask."""
    m = torch.zeros(kernel, kernel, device=device, dtype=dtype)
    p = kernel // 2
    m[:p, :] = 1
    m[p, :p + (1 if mask_type == "B" else 0)] = 1
    return m


def masked_conv(x, weight, bias, mask_type: str, relu: bool = False):
    return pixelops.masked_conv2d(x, weight, bias, mask_type=mask_type, activation="relu" if relu else None)


def conv1x1(x, weight, bias, relu: bool = False):
    return pixelops.conv2d(x, weight, bias, activation="relu" if relu else None)


def cross_entropy(logits, target, reduction: str = "mean"):
    return pixelops.cross_entropy(logits, target, reduction=reduction)
