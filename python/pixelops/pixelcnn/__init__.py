"""PixelCNN on pixelops' ops, with naive and fused (cached, one-launch) autoregressive samplers.

    model = pixelops.PixelCNN(levels=2)
    loss = model.loss(x)                          # mean cross-entropy over pixels, x in [0, 1]
    imgs = model.sample(16, size=(28, 28), seed=1)  # fused kernels where the model allows, naive otherwise
"""
from .model import PixelCNN

__all__ = ["PixelCNN"]
