"""torch.nn modules whose forward runs pixelops: subclasses of their torch.nn counterparts, with the same
constructor arguments, parameters and state_dict keys, so checkpoints load either way.

They add no state of their own (MaskedConv2d adds only `mask_type`), which is what lets pixelops.swap() turn
a torch module into one of these in place, keeping its Parameter objects, hooks and everything else.
"""
from __future__ import annotations

import torch

import pixelops

from .._arrays import check_choice
from ..ops.conv2d import MASK_TYPES
from . import functional as PF


def _zeros_padding_only(module):
    if module.padding_mode != "zeros":
        raise ValueError(f"pixelops.nn.MaskedConv2d: padding_mode={module.padding_mode!r} is not supported: "
                         "a causal mask needs zero padding (any other mode brings pixels from below and to "
                         "the right into the padding above and to the left)")


_rows: dict = {}


def _pixelops_takes(torch_module: type, *args) -> bool:
    """Whether pixelops has kernels for this call of a module of torch_module's kind: the drop-in table's rule,
    the one patch() applies to the functionals (dtypes and devices with kernels, class-index or same-dtype
    probability targets, no empty weight). Anything else runs torch's own forward, as it did before a swap.
    (Every module call asks: about half a microsecond on a 2-core CPU.)"""
    row = _rows.get(torch_module)
    if row is None:
        from .dropins import TABLE  # (dropins imports this module)

        _rows.update((r.torch_module, r) for r in TABLE)
        row = _rows[torch_module]
    return row.takes(*args)


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
    """torch.nn.Conv2d on pixelops.conv2d. Other padding modes than "zeros" ("reflect", "replicate",
    "circular") pad the input with torch.nn.functional.pad first, as torch.nn.Conv2d does, then convolve
    unpadded."""

    # torch.nn.Conv2d's arguments, spelled out so that inspect.signature and help() show them
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, padding_mode="zeros", device=None, dtype=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, device, dtype)

    def forward(self, input):
        weight, bias = self.weight, self.bias  # (each a lookup through nn.Module.__getattr__: read once)
        if not _pixelops_takes(torch.nn.Conv2d, input, weight, bias):
            out = torch.nn.Conv2d.forward(self, input)
            return torch.relu(out) if self.activation == "relu" else out
        # (read at each call, as torch's forward does: a padding_mode set after construction holds too)
        if self.padding_mode != "zeros":
            input = torch.nn.functional.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            padding = 0
        else:
            padding = self.padding
        return PF.conv2d(input, weight, bias, self.stride, padding, self.dilation, self.groups,
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
        _zeros_padding_only(self)
        check_choice(mask_type, MASK_TYPES, "mask_type", "pixelops.nn.MaskedConv2d")
        if any(k % 2 == 0 for k in self.kernel_size):
            raise ValueError(f"pixelops.nn.MaskedConv2d: masked convolutions need an odd 'kernel_size', got "
                             f"{self.kernel_size}")
        self.mask_type = mask_type

    def extra_repr(self):
        return super().extra_repr() + f", mask_type={self.mask_type!r}"

    def forward(self, input):
        _zeros_padding_only(self)  # (read at each call: a padding_mode set after construction too)
        weight, bias = self.weight, self.bias
        if not _pixelops_takes(torch.nn.Conv2d, input, weight, bias):  # torch's F.conv2d(x, w * mask)
            mask = pixelops.conv_mask(self.kernel_size, self.mask_type, dtype=weight.dtype, device=weight.device)
            out = torch.nn.functional.conv2d(input, weight * mask, bias, self.stride, self.padding, self.dilation,
                                             self.groups)
            return torch.relu(out) if self.activation == "relu" else out
        return PF.masked_conv2d(input, weight, bias, self.mask_type, self.stride, self.padding, self.dilation,
                                self.groups, activation=self.activation)


class ReLU(_Named, torch.nn.ReLU):
    """torch.nn.ReLU on pixelops.relu."""

    def forward(self, input):
        if not _pixelops_takes(torch.nn.ReLU, input):
            return torch.nn.ReLU.forward(self, input)
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
        weight = self.weight
        if not _pixelops_takes(torch.nn.CrossEntropyLoss, input, target, weight):
            return torch.nn.CrossEntropyLoss.forward(self, input, target)
        return PF.cross_entropy(input, target, weight=weight, ignore_index=self.ignore_index,
                                reduction=self.reduction, label_smoothing=self.label_smoothing)
