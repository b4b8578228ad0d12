"""Helpers for the tests: device parameters and comparisons against PyTorch."""
import pytest
import torch

# Parametrise a test over devices; the CUDA one is marked and skips without a GPU (see conftest.py).
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]

# Default tolerances per dtype for comparisons with a float64 reference.
TOL = {
    torch.float64: dict(rtol=1e-10, atol=1e-12),
    torch.float32: dict(rtol=1e-5, atol=1e-6),
    torch.float16: dict(rtol=1e-2, atol=1e-3),
    torch.bfloat16: dict(rtol=2e-2, atol=1e-2),
}


def strided(t: torch.Tensor, kind: str) -> torch.Tensor:
    """A view of t's values with unusual strides: 'transposed', 'sliced' (every other element of a bigger
    buffer), or 'offset' (storage offset of one element, so not 16-byte aligned). Same values as t."""
    if kind == "contiguous":
        return t
    if kind == "transposed":
        return t.transpose(0, -1).contiguous().transpose(0, -1) if t.dim() > 1 else t
    if kind == "sliced":
        big = torch.empty(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype, device=t.device).normal_() if t.dim() else t
        if t.dim():
            big[..., ::2] = t
            return big[..., ::2]
        return t
    if kind == "offset":
        flat = torch.empty(t.numel() + 1, dtype=t.dtype, device=t.device).normal_()
        flat[1:] = t.reshape(-1)
        return flat[1:].view(t.shape)
    raise ValueError(kind)


LAYOUTS = ["contiguous", "transposed", "sliced", "offset"]
