"""The strongest plain-PyTorch sampler, the baseline of the sampling benchmarks: a cached sampler.

At each pixel every layer is computed at that one position from the activations of the layer below cached
at earlier pixels (a window gathered from a zero-padded NHWC buffer times the masked weights as one matrix
product), then the head and the same inverse-CDF draw as the other samplers. On CUDA it is launch-bound
(some 40 small launches per pixel); bench/sampling.py also times it captured as one CUDA graph.
"""
from __future__ import annotations

import torch

from .layers import mask
from .sampling import draw, uniforms


class CachedSampler:
    """Holds the flattened masked weights and the padded activation buffers for (n, H, W)."""

    def __init__(self, model, n, H, W):
        self.model, self.n, self.H, self.W = model, n, H, W
        dev, dt = model.first.weight.device, model.first.weight.dtype
        self.pa, self.pb = model.first_kernel // 2, model.kernel // 2
        p = max(self.pa, self.pb)
        self.p = p

        def rows(conv, mask_type):
            # (Cout, Cin, k, k) -> ((p+1) * k * Cin, Cout): the window's rows r-p..r, masked taps zeroed
            k = conv.weight.shape[-1]
            w = (conv.weight * mask(k, mask_type, dev, dt))[:, :, : k // 2 + 1, :]
            return w.permute(2, 3, 1, 0).reshape(-1, w.shape[0]).detach().contiguous()

        self.w = [rows(model.first, "A")] + [rows(c, "B") for c in model.body]
        self.b = [model.first.bias.detach()] + [c.bias.detach() for c in model.body]
        self.h1 = model.head1.weight.detach().flatten(1).t().contiguous()
        self.h2 = model.head2.weight.detach().flatten(1).t().contiguous()
        self.hb1, self.hb2 = model.head1.bias.detach(), model.head2.bias.detach()
        C = model.channels
        # NHWC buffers padded by p on top, left and right: the image, then each layer's output.
        self.img = torch.zeros(n, H + p, W + 2 * p, 1, device=dev, dtype=dt)
        self.acts = [torch.zeros(n, H + p, W + 2 * p, C, device=dev, dtype=dt) for _ in range(model.n_layers + 1)]

    def reset(self):
        self.img.zero_()
        for a in self.acts:
            a.zero_()

    def step_logits(self, r, c):
        """Every layer at pixel (r, c), then the head: logits (n, levels)."""
        p, n = self.p, self.n
        src = self.img
        for l, (w, b) in enumerate(zip(self.w, self.b)):
            q = self.pa if l == 0 else self.pb
            win = src[:, r + p - q: r + p + 1, c + p - q: c + p + q + 1, :].reshape(n, -1)
            out = torch.relu(torch.addmm(b, win, w))
            if l > 0 and self.model.residual:
                out = out + src[:, r + p, c + p, :]
            self.acts[l][:, r + p, c + p, :] = out
            src = self.acts[l]
        h = torch.relu(torch.addmm(self.hb1, src[:, r + p, c + p, :], self.h1))
        return torch.addmm(self.hb2, h, self.h2)

    def write(self, r, c, k):
        self.img[:, r + self.p, c + self.p, 0] = k.to(self.img.dtype) / (self.model.levels - 1)


def sample_cached(model, n, H, W, temperature=1.0, seed=0, sampler=None) -> torch.Tensor:
    """Level indices (n, H, W), drawn with the same uniforms and inverse CDF as the other samplers."""
    s = sampler or CachedSampler(model, n, H, W)
    s.reset()
    u = uniforms(n, H * W, seed, model.first.weight.device)
    out = torch.empty(n, H, W, dtype=torch.long, device=u.device)
    with torch.no_grad():
        for i in range(H * W):
            r, c = divmod(i, W)
            k = draw(s.step_logits(r, c), u[:, i], temperature)
            s.write(r, c, k)
            out[:, r, c] = k
    return out


__all__ = ["CachedSampler", "sample_cached"]
