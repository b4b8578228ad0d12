"""pixelops.PixelCNN: the model of van den Oord et al. (2016) for one-channel images with `levels` values."""
from __future__ import annotations

import math

import torch
from torch import nn

from .._arrays import as_int
from . import layers


class _Conv(nn.Module):
    """Weight and bias of one convolution, initialised as torch.nn.Conv2d does; the forward is pixelops'."""

    def __init__(self, cin, cout, kernel, mask_type=None):
        super().__init__()
        self.mask_type = mask_type
        self.weight = nn.Parameter(torch.empty(cout, cin, kernel, kernel))
        self.bias = nn.Parameter(torch.empty(cout))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        bound = 1 / math.sqrt(cin * kernel * kernel)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x, relu=False):
        if self.mask_type is None:
            return layers.conv1x1(x, self.weight, self.bias, relu)
        return layers.masked_conv(x, self.weight, self.bias, self.mask_type, relu)


def capturing(t: torch.Tensor) -> bool:
    """Whether t's CUDA stream is capturing a graph: no value can be read back then."""
    return t.is_cuda and torch.cuda.is_current_stream_capturing()


def _check_kernel(name, k):
    if k < 1 or k % 2 == 0:
        raise ValueError(f"PixelCNN: '{name}' must be an odd positive int (a masked kernel needs a centre), got {k!r}")


class PixelCNN(nn.Module):
    """mask-A conv (first_kernel), ReLU, `layers` x (mask-B conv (kernel), ReLU), 1x1 conv to head_channels,
    ReLU, 1x1 conv to `levels` logits. With ``residual=True`` each mask-B layer adds its input back
    (h + relu(conv(h))); the fused samplers support both.

    Inputs are images in [0, 1] with one channel, quantised to `levels` values k / (levels - 1).
    """

    def __init__(self, in_channels=1, levels=2, channels=64, layers=7, first_kernel=7, kernel=3, head_channels=64,
                 *, residual=False):
        super().__init__()
        in_channels, levels, channels, layers, first_kernel, kernel, head_channels = (
            as_int(v, name, "PixelCNN") for name, v in (
                ("in_channels", in_channels), ("levels", levels), ("channels", channels), ("layers", layers),
                ("first_kernel", first_kernel), ("kernel", kernel), ("head_channels", head_channels)))
        if in_channels != 1:
            raise ValueError(f"PixelCNN: 'in_channels' must be 1 (one-channel images; channel-wise masks for colour "
                             f"are not implemented), got {in_channels!r}")
        if not 2 <= levels <= 256:
            raise ValueError(f"PixelCNN: 'levels' must be an int from 2 to 256, got {levels!r}")
        for name, v in (("channels", channels), ("head_channels", head_channels)):
            if v < 1:
                raise ValueError(f"PixelCNN: '{name}' must be a positive int, got {v!r}")
        if layers < 0:
            raise ValueError(f"PixelCNN: 'layers' must be a non-negative int, got {layers!r}")
        _check_kernel("first_kernel", first_kernel)
        _check_kernel("kernel", kernel)
        self.in_channels, self.levels, self.channels, self.n_layers = in_channels, levels, channels, layers
        if not isinstance(residual, bool):  # (any truthy value, 'no' included, would switch the skips on)
            raise TypeError(f"PixelCNN: 'residual' must be True or False, got {residual!r}")
        self.first_kernel, self.kernel, self.head_channels, self.residual = first_kernel, kernel, head_channels, residual
        self.first = _Conv(in_channels, channels, first_kernel, "A")
        self.body = nn.ModuleList(_Conv(channels, channels, kernel, "B") for _ in range(layers))
        self.head1 = _Conv(channels, head_channels, 1)
        self.head2 = _Conv(head_channels, levels, 1)

    # ---- data ----------------------------------------------------------------------------------------------
    def quantise(self, x: torch.Tensor) -> torch.Tensor:
        """Level indices (int64, (N, H, W)) of images x in [0, 1] of shape (N, 1, H, W)."""
        k = self._levels_unchecked(x)
        # NaN survives clamp and round and then becomes an arbitrary int64 (INT64_MIN on x86): an out-of-range
        # target in loss and log_prob. On CUDA the check is a host sync; loss and log_prob quantise after their
        # forward is queued, just before cross_entropy's own sync (its target check), so it costs them little.
        # Skipped while a CUDA graph is captured, where nothing has run yet.
        if not capturing(x) and bool(torch.isnan(x).any()):
            raise ValueError("PixelCNN: 'x' holds NaN; expected images with values in [0, 1]")
        return k

    def _levels_unchecked(self, x: torch.Tensor) -> torch.Tensor:
        """quantise without its NaN check (a NaN pixel's level is then arbitrary)."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"PixelCNN: 'x' must be a torch tensor, got {type(x).__name__}")
        if x.dim() != 4 or x.shape[1] != 1:
            raise ValueError(f"PixelCNN: 'x' must have shape (N, 1, H, W), got {tuple(x.shape)}")
        return torch.round(x.clamp(0, 1) * (self.levels - 1)).long()[:, 0]

    def levels_to_images(self, k: torch.Tensor) -> torch.Tensor:
        """(N, H, W) level indices -> (N, 1, H, W) images k / (levels - 1) in the parameters' dtype."""
        return (k.to(self.first.weight.dtype) / (self.levels - 1)).unsqueeze(1)

    # ---- model ---------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, levels, H, W) of each pixel given the pixels before it in raster order."""
        h = self.levels_to_images(self._levels_unchecked(x)).to(x.device)
        # A NaN pixel stays NaN, as through torch's own layers (its quantised level would be arbitrary), and the
        # logits it reaches come out NaN: no value is read back, so no host sync on CUDA (sampling's naive
        # method runs this once a pixel). loss and log_prob raise for NaN images (quantise).
        h = torch.where(torch.isnan(x), x.to(h.dtype), h)
        return self._logits(h)

    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        # every ReLU is fused into the output write of the conv before it
        h = self.first(h, relu=True)
        for conv in self.body:
            out = conv(h, relu=True)
            h = h + out if self.residual else out
        return self.head2(self.head1(h, relu=True))

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy (nats per pixel) of the images x."""
        return layers.cross_entropy(self(x), self.quantise(x))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) in nats, one value per image (N,)."""
        nll = layers.cross_entropy(self(x), self.quantise(x), reduction="none")
        return -nll.flatten(1).sum(1)

    # ---- sampling ------------------------------------------------------------------------------------------
    def sample(self, n, size=(28, 28), temperature=1.0, seed=None, observed=None, observed_mask=None,
               method="auto"):
        """n images (n, 1, H, W) with values k / (levels - 1), on the model's device, drawn in raster order.

        method: "naive" (the whole network once per pixel), "fused" (pixelops' cached sampling kernels: each
        layer computed once per position; one kernel launch on CUDA) or "auto" (fused when the model allows).
        The uniforms come from a counter-based generator keyed by (seed, image, pixel) and the draw is an
        inverse CDF, so one seed gives the same images with either method, on CPU or CUDA. seed=None draws
        one from torch's global generator. Inpainting: where observed_mask is 1 the pixel is copied from
        observed (n, 1, H, W) in [0, 1] and later pixels condition on it. "naive" samples through the model's
        forward, a subclass's own included. Logits with no distribution at a pixel (a NaN or +inf logit, or
        all -inf) raise ValueError with either method.
        """
        from . import sampling

        return sampling.sample(self, n, size, temperature, seed, observed, observed_mask, method)
