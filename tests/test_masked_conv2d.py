"""pixelops.masked_conv2d against F.conv2d(x, w * mask): both mask types, kernel sizes, options, forward and
backward; exact zeros in the weight gradient's masked taps; conv_mask; bad input."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import pixelops
from _util import DEVICES

CONFIGS = [
    ((2, 3, 8, 9), (4, 3, 3), dict()),
    ((2, 1, 7, 7), (5, 7, 7), dict()),
    ((1, 2, 6, 5), (3, 1, 1), dict()),
    ((2, 4, 9, 8), (6, 3, 5), dict(groups=2)),
    ((2, 3, 10, 10), (4, 5, 5), dict(dilation=2)),
    ((2, 3, 9, 11), (4, 3, 3), dict(stride=2, padding=1)),
    ((2, 6, 7, 7), (6, 3, 3), dict(groups=6, padding=(2, 0))),
    ((0, 3, 5, 5), (2, 3, 3), dict()),
    ((2, 16, 6, 7), (8, 5, 3), dict()),                # more in than out channels (flipped grad_input)
]


def _data(x_shape, w_shape, groups, dtype, device):
    gen = torch.Generator().manual_seed(hash((x_shape, w_shape, "masked")) % 2**31)
    cout, kh, kw = w_shape
    x = torch.randn(x_shape, generator=gen, dtype=torch.float64).to(device, dtype)
    w = torch.randn((cout, x_shape[1] // groups, kh, kw), generator=gen, dtype=torch.float64).to(device, dtype)
    b = torch.randn(cout, generator=gen, dtype=torch.float64).to(device, dtype)
    return x, w, b


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mask_type", ["A", "B"])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("x_shape,w_shape,kw", CONFIGS)
def test_matches_conv_of_masked_weight(device, x_shape, w_shape, kw, mask_type, relu):
    x, w, b = _data(x_shape, w_shape, kw.get("groups", 1), torch.float64, device)
    mask = pixelops.conv_mask(w.shape[-2:], mask_type, dtype=torch.float64, device=device)
    leaves = [t.clone().requires_grad_() for t in (x, w, b)]
    y = pixelops.masked_conv2d(*leaves, mask_type, activation="relu" if relu else None, **kw)
    ref_leaves = [t.clone().requires_grad_() for t in (x, w, b)]
    kw_ref = dict(kw, padding=kw.get("padding", "same"))
    y_ref = F.conv2d(ref_leaves[0], ref_leaves[1] * mask, ref_leaves[2], **kw_ref)
    y_ref = torch.relu(y_ref) if relu else y_ref
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    g = torch.randn_like(y)
    grads = torch.autograd.grad(y, leaves, g)
    grads_ref = torch.autograd.grad(y_ref, ref_leaves, g)
    for a, r in zip(grads, grads_ref):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-10)
    # masked taps get exactly zero: skipped, not multiplied by zero
    assert torch.all(grads[1][..., mask == 0] == 0)


def test_float32_and_masked_weight_values_unused():
    x, w, b = _data((2, 8, 12, 12), (16, 7, 7), 1, torch.float32, "cpu")
    mask = pixelops.conv_mask(7, "A")
    y = pixelops.masked_conv2d(x, w, b, "A")
    # whatever sits in the masked taps (here NaN) is never read
    w_nan = w.masked_fill(mask == 0, float("nan"))
    torch.testing.assert_close(pixelops.masked_conv2d(x, w_nan, b, "A"), y, rtol=0, atol=0)
    ref = F.conv2d(x.double(), (w * mask).double(), b.double(), padding=3)
    torch.testing.assert_close(y.double(), ref, rtol=1e-4, atol=1e-4)


def test_gradcheck_float64():
    x, w, b = _data((2, 2, 5, 6), (3, 3, 3), 1, torch.float64, "cpu")
    args = [t.requires_grad_() for t in (x, w, b)]
    for mask_type in "AB":
        assert torch.autograd.gradcheck(lambda x, w, b: pixelops.masked_conv2d(x, w, b, mask_type), args)


def test_numpy():
    x, w, b = _data((2, 3, 6, 6), (4, 5, 5), 1, torch.float64, "cpu")
    y = pixelops.masked_conv2d(x.numpy(), w.numpy(), b.numpy(), "B", activation="relu")
    assert isinstance(y, np.ndarray)
    ref = torch.relu(F.conv2d(x, w * pixelops.conv_mask(5, "B", dtype=torch.float64), b, padding=2))
    np.testing.assert_allclose(y, ref.numpy(), rtol=1e-10, atol=1e-10)


def test_conv_mask_values():
    b3 = [[1, 1, 1], [1, 1, 0], [0, 0, 0]]
    a3 = [[1, 1, 1], [1, 0, 0], [0, 0, 0]]
    assert pixelops.conv_mask(3, "B").tolist() == b3
    assert pixelops.conv_mask((3, 3), "A").tolist() == a3
    assert pixelops.conv_mask(1, "A").sum() == 0 and pixelops.conv_mask(1, "B").sum() == 1
    assert int(pixelops.conv_mask(7, "A").sum()) == 24 and int(pixelops.conv_mask(3, "B").sum()) == 5
    m = pixelops.conv_mask((3, 5), "B", dtype=np.float32)
    assert isinstance(m, np.ndarray) and m.dtype == np.float32 and m.shape == (3, 5) and m.sum() == 8
    assert pixelops.conv_mask(5, "A", dtype=torch.float64).dtype == torch.float64


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cuda_dtypes(dtype):
    x, w, b = _data((4, 16, 14, 14), (32, 3, 3), 1, dtype, "cuda")
    mask = pixelops.conv_mask(3, "B", dtype=torch.float32, device="cuda")
    y = pixelops.masked_conv2d(x, w, b, "B", allow_tf32=False)
    ref = F.conv2d(x.float(), w.float() * mask, b.float(), padding=1)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=3e-2, atol=3e-2)
    torch.testing.assert_close(y.float(), ref, **tol)


BAD = [
    (lambda x, w, b: pixelops.masked_conv2d(x, w[..., :2, :2], b), ValueError, "odd kernel"),
    (lambda x, w, b: pixelops.masked_conv2d(x, w[..., :2], b), ValueError, "odd kernel"),
    (lambda x, w, b: pixelops.masked_conv2d(x, w, b, "C"), ValueError, "mask_type"),
    (lambda x, w, b: pixelops.masked_conv2d(x, w, b, "a"), ValueError, "mask_type"),
    (lambda x, w, b: pixelops.masked_conv2d(x, w, b, "B", stride=2), ValueError, "padding"),
    (lambda x, w, b: pixelops.masked_conv2d(x[:, :2], w, b), ValueError, "channels"),
    (lambda x, w, b: pixelops.masked_conv2d(x.int(), w, b), TypeError, "input"),
    (lambda x, w, b: pixelops.conv_mask(4, "A"), ValueError, "odd kernel"),
    (lambda x, w, b: pixelops.conv_mask(3, "X"), ValueError, "mask_type"),
]


@pytest.mark.parametrize("call,error,words", BAD)
def test_bad_input(call, error, words):
    x, w, b = _data((2, 4, 6, 6), (6, 3, 3), 1, torch.float32, "cpu")
    with pytest.raises(error, match=words):
        call(x, w, b)


def test_conv_mask_refuses_a_device_with_a_numpy_dtype():
    # a numpy dtype gives a numpy array: a device asked for alongside was silently ignored
    with pytest.raises(ValueError, match="'device'"):
        pixelops.conv_mask(3, "B", dtype=np.float32, device="meta")
