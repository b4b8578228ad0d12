"""Benchmark rows of PixelCNN sampling: pixelops' fused sampler against PyTorch's samplers.

The model of shared/anchors.md: 7x7 mask-A conv 1->64, 7 x (3x3 mask-B conv 64->64), 1x1 64->64, 1x1 64->levels,
28x28 images; batch 16 on the CPU, 64 on CUDA; 2 and 256 levels. Rows:
  naive   the whole network once per pixel, timed on the first NAIVE_PIXELS pixels and scaled to 784 (the full
          loop takes some 30 s on a 2-core CPU); the shape column says so
  cached  PyTorch's strongest eager sampler (pixelops/pixelcnn/cached.py): each layer at one position per pixel
  graph   (CUDA) the cached sampler captured as one CUDA graph, escaping its ~30,000 launches
All draw with the same seed, uniforms and inverse CDF; the error column is the fraction of pixels where the
PyTorch sampler and the fused one disagree (0 but for rounding on a boundary).
"""
from __future__ import annotations

import torch

from ..pixelcnn import PixelCNN
from ..pixelcnn.cached import CachedSampler, sample_cached
from ..pixelcnn.sampling import naive, run_fused, uniforms, draw
from .case import Case

H = W = 28
NAIVE_PIXELS = 14  # half a row of the image
SEED = 12345


def model(levels, device):
    torch.manual_seed(0)
    return PixelCNN(levels=levels, channels=64, layers=7, first_kernel=7, kernel=3, head_channels=64).to(device)


def _fused(m, n):
    def go(_args):
        return run_fused(m, n, H, W, 1.0, SEED)[0]
    return go


def _disagree(a, b, pixels=None):
    a, b = a.reshape(a.shape[0], -1).long().cpu(), b.reshape(b.shape[0], -1).long().cpu()
    if pixels is not None:
        a, b = a[:, :pixels], b[:, :pixels]
    return (a != b).float().mean().item()


class CachedGraph:
    """The cached sampler captured once as a CUDA graph (uniforms drawn outside it): replay() samples."""

    def __init__(self, m, n):
        self.s = CachedSampler(m, n, H, W)
        self.u = uniforms(n, H * W, SEED, "cuda")
        self.out = torch.empty(n, H, W, dtype=torch.long, device="cuda")
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), torch.no_grad():
            self._body()  # warm-up outside capture, as CUDA graphs require
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph), torch.no_grad():
            self._body()

    def _body(self):
        self.s.reset()
        for i in range(H * W):
            r, c = divmod(i, W)
            k = draw(self.s.step_logits(r, c), self.u[:, i], 1.0)
            self.s.write(r, c, k)
            self.out[:, r, c] = k

    def __call__(self, _args=None):
        self.graph.replay()
        return self.out


def cases(device):
    n = 64 if device == "cuda" else 16
    out = []
    for levels in (2, 256):
        m = model(levels, device)
        shape = f"{n}x1x{H}x{W} L={levels}"
        fused = _fused(m, n)

        sampler = CachedSampler(m, n, H, W)

        def cached(_args, m=m, n=n, sampler=sampler):
            return sample_cached(m, n, H, W, 1.0, SEED, sampler)

        def cached_error(_args, cached=cached, fused=fused):
            return _disagree(cached(None), fused(None))

        out.append(Case("sampling", "cached", shape, device, lambda: None, cached, fused, cached_error,
                        flush_cache=False, repeats=5 if device == "cpu" else 10, notes=dict(levels=levels)))
        if device == "cuda":
            def graph_setup(m=m, n=n):
                return CachedGraph(m, n)

            def graph_error(g, fused=fused):
                return _disagree(g(), fused(None))

            out.append(Case("sampling", "graph", shape, device, graph_setup, lambda g: g(), fused, graph_error,
                            flush_cache=False, repeats=10, notes=dict(levels=levels)))

        def naive_part(_args, m=m, n=n):
            with torch.no_grad():
                return naive(m, n, H, W, 1.0, SEED, pixels=NAIVE_PIXELS)

        def naive_error(_args, naive_part=naive_part, fused=fused):
            return _disagree(naive_part(None), fused(None), NAIVE_PIXELS)

        out.append(Case("sampling", "naive", f"{shape} ({NAIVE_PIXELS} px x{H * W // NAIVE_PIXELS})", device,
                        lambda: None, naive_part, fused, naive_error, flush_cache=False,
                        torch_scale=H * W / NAIVE_PIXELS, repeats=3 if device == "cpu" else 10,
                        notes=dict(levels=levels, naive_pixels_timed=NAIVE_PIXELS)))
    return out
