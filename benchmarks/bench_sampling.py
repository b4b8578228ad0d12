"""PixelCNN sampling (the model of shared/anchors.md, 28x28): pixelops' fused sampler against PyTorch's cached
sampler (pytest benchmarks/bench_sampling.py). The naive loop (30 s and more per call on a 2-core CPU) is
left to `python -m pixelops bench --ops sampling`, which times a share of its pixels and scales it."""
import pytest
import torch

from conftest import sync
from pixelops.bench.sampling import SEED, model
from pixelops.pixelcnn.cached import CachedSampler, sample_cached
from pixelops.pixelcnn.sampling import run_fused

H = W = 28


@pytest.mark.parametrize("impl", ["torch-cached", "pixelops-fused"])
@pytest.mark.parametrize("levels", [2, 256])
def test_sampling(benchmark, device, impl, levels):
    n = 64 if device == "cuda" else 16
    benchmark.group = f"pixelcnn sampling {n}x28x28 levels={levels} {device}"
    m = model(levels, device)
    if impl == "torch-cached":
        sampler = CachedSampler(m, n, H, W)

        def run():
            sample_cached(m, n, H, W, 1.0, SEED, sampler)
            sync(device)
    else:
        def run():
            with torch.no_grad():
                run_fused(m, n, H, W, 1.0, SEED)
            sync(device)

    benchmark.pedantic(run, rounds=3 if impl == "torch-cached" else 10, warmup_rounds=1)
