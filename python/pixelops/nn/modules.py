"""torch.nn modules whose forward runs pixelops: subclasses of their torch.nn counterparts, with the same
constructor arguments, parameters and state_dict keys, so checkpoints load either way.

They add no state of their own (MaskedConv2d adds only `mask_type`), which is what lets pixelops.swap() turn
a torch module into one of these in place, keeping its Parameter objects, hooks and everything else.
"""
from __future__ import annotations

import torch

from . import functional as PF


def _zeros_padding_only(module, cls_name):
    if module.padding_mode != "zeros":
        raise ValueError(f"pixelops.nn.{cls_name}: padding_mode={module.padding_mode!r} is not supported; "
                         "pixelops convolves with zero padding only (keep torch.nn.Conv2d for this layer)")


class _Named:
    """print(model) says which layers run pixelops: "pixelops.Conv2d(1, 16, ...)"."""

    def _get_name(self):
        return "pixelops." + type(self).__name__


class _FusableActivation:
    """`activation`: None, or "relu" where pixelops.swap(fuse_relu=True) moved the ReLU that followed the conv in
    an nn.Sequential into the conv's output write (an instance attribute then; not in the state_dict)."""
    activation = None

    def extra_repr(self):
        extra = super().extra_repr()
        return extra if self.activation is None else extra + f", activation={self.activation!r}"


class Conv2d(_Named, _FusableActivation, torch.nn.Conv2d):
    """torch.nn.Conv2d on pixelops.conv2d (padding_mode="zeros" only)."""

    # torch.nn.Conv2d's arguments, spelled out so that inspect.signature and help() show them
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, padding_mode="zeros", device=None, dtype=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, device, dtype)
        _zeros_padding_only(self, "Conv2d")

    def forward(self, input):
        return PF.conv2d(input, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups,
                         activation=self.activation)


class MaskedConv2d(_Named, _FusableActivation, torch.nn.Conv2d):
    """PixelCNN's masked convolution: torch.nn.Conv2d's arguments plus `mask_type` ("A": each output pixel
    sees the pixels strictly before it in raster order; "B": also itself). The weight keeps its full shape
    (state_dict as nn.Conv2d's); pixelops.masked_conv2d ignores the masked-out taps, which get zero gradient.
    padding defaults to "same", the only padding that keeps a causal mask aligned with its output pixel."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding="same", dilation=1, groups=1,
                 bias=True, padding_mode="zeros", device=None, dtype=None, *, mask_type="B"):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, device, dtype)
        _zeros_padding_only(self, "MaskedConv2d")
        if mask_type not in ("A", "B"):
            raise ValueError(f"pixelops.nn.MaskedConv2d: 'mask_type' must be 'A' or 'B', got {mask_type!r}")
        self.mask_type = mask_type

    def extra_repr(self):
        return super().extra_repr() + f", mask_type={self.mask_type!r}"

    def forward(self, input):
        return PF.masked_conv2d(input, self.weight, self.bias, self.mask_type, self.stride, self.padding,
                                self.dilation, self.groups, activation=self.activation)


class ReLU(_Named, torch.nn.ReLU):
    """torch.nn.ReLU on pixelops.relu."""

    def forward(self, input):
        return PF.relu(input, inplace=self.inplace)


class FusedReLU(ReLU):
    """A ReLU that pixelops.swap(fuse_relu=True) moved into the convolution before it: it passes its input on
    as it is (already rectified by the conv). Still an nn.ReLU, with the same (empty) state_dict."""

    def extra_repr(self):
        return "fused into the convolution before it"

    def forward(self, input):
        return input


class CrossEntropyLoss(_Named, torch.nn.CrossEntropyLoss):
    """torch.nn.CrossEntropyLoss on pixelops.cross_entropy."""

    def forward(self, input, target):
        return PF.cross_entropy(input, target, weight=self.weight, ignore_index=self.ignore_index,
                                reduction=self.reduction, label_smoothing=self.label_smoothing)
