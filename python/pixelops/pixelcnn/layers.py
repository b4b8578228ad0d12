"""The pixelops ops the PixelCNN is built from, in one place: masked convolution, 1x1 convolution, ReLU and
cross-entropy. Falls back to torch.nn.functional for an op this checkout does not have yet."""
from __future__ import annotations

import torch
import torch.nn.functional as F

import pixelops


def mask(kernel: int, mask_type: str, device=None, dtype=None) -> torch.Tensor:
    """The (kernel, kernel) PixelCNN mask of one input channel: every row above the centre, and the centre row
    left of the centre (type "A") or up to and including it (type "B"). Same taps as mask_taps in
    csrc/common/pixelcnn_plan.h."""
    m = torch.zeros(kernel, kernel, device=device, dtype=dtype)
    p = kernel // 2
    m[:p, :] = 1
    m[p, :p + (1 if mask_type == "B" else 0)] = 1
    return m


def masked_conv(x, weight, bias, mask_type: str):
    op = getattr(pixelops, "masked_conv2d", None)
    if op is not None:
        return op(x, weight, bias, mask_type=mask_type)
    k = weight.shape[-1]
    return F.conv2d(x, weight * mask(k, mask_type, weight.device, weight.dtype), bias, padding=k // 2)


def conv1x1(x, weight, bias):
    op = getattr(pixelops, "conv2d", None)
    return op(x, weight, bias) if op is not None else F.conv2d(x, weight, bias)


def relu(x):
    return pixelops.relu(x)


def cross_entropy(logits, target, reduction: str = "mean"):
    op = getattr(pixelops, "cross_entropy", None)
    if op is not None:
        return op(logits, target, reduction=reduction)
    return F.cross_entropy(logits, target, reduction=reduction)
