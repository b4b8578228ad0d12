"""pixelops.conv2d and masked_conv2d on random combinations of every option at once, against PyTorch in float64:
forward and all three gradients. The hand-picked cases of test_conv2d.py and test_masked_conv2d.py take one
option at a time; here groups, strides, dilations, padding modes, masks, the fused ReLU, a missing bias, empty
batches, views and float32 meet in the same call, the way a user's layer may combine them. On CUDA the draws
run again in float32 on TF32 tensor cores. The draws come from a fixed seed, so a failing case keeps its number
(its id names its options)."""
import random

import pytest
import torch
import torch.nn.functional as F

import pixelops
from _util import DEVICES, LAYOUTS, strided

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")

CASES = 120


def _draw(i: int) -> dict:
    """Case i: the options of one call (always the same for the same i)."""
    rng = random.Random(1000 + i)
    masked = rng.random() < 0.35
    groups = rng.choice([1, 1, 1, 2, 3])
    # one input channel a group (depthwise-like), a few, or enough for the CPU's direct paths (64 rows of K)
    cin_g = rng.choice([1, rng.randint(1, 5), rng.randint(1, 5), rng.randint(1, 5), rng.randint(8, 20)])
    kh = rng.choice([1, 3, 5]) if masked else rng.randint(1, 5)
    kw = kh if masked or rng.random() < 0.6 else rng.randint(1, 5)
    stride = (rng.randint(1, 3), rng.randint(1, 3))
    dilation = (rng.randint(1, 3), rng.randint(1, 3))
    padding = rng.choice(["same", 0, 1, (1, 2)] if masked else ["same", "valid", 0, 1, 2, (0, 3)])
    if padding == "same":
        stride = (1, 1)  # (PyTorch allows 'same' only at stride 1)
    pads = (0, 0) if isinstance(padding, str) else (padding if isinstance(padding, tuple) else (padding, padding))
    reach = (dilation[0] * (kh - 1) + 1 - 2 * pads[0], dilation[1] * (kw - 1) + 1 - 2 * pads[1])
    return dict(
        masked=masked, mask_type=rng.choice("AB"), groups=groups, cin=groups * cin_g,
        cout=groups * rng.randint(1, 4), n=0 if rng.random() < 0.08 else rng.randint(1, 3), k=(kh, kw), stride=stride,
        dilation=dilation, padding=padding,
        hw=(max(rng.randint(1, 20), reach[0]), max(rng.randint(1, 20), reach[1])),  # the kernel fits the input
        bias=rng.random() < 0.7, relu=rng.random() < 0.25, x_layout=rng.choice(LAYOUTS),
        w_layout=rng.choice(LAYOUTS), float32=rng.random() < 0.3)


def _id(i: int) -> str:
    c = _draw(i)
    op = f"mask{c['mask_type']}" if c["masked"] else "conv"
    return (f"{i}-{op}-g{c['groups']}-k{c['k'][0]}x{c['k'][1]}-s{c['stride'][0]}{c['stride'][1]}"
            f"-d{c['dilation'][0]}{c['dilation'][1]}-p{str(c['padding']).replace(' ', '')}"
            f"{'-relu' if c['relu'] else ''}{'' if c['bias'] else '-nobias'}{'-f32' if c['float32'] else ''}")


def _check(device, i, tf32=False):
    """Case i against F.conv2d in float64, forward and the three gradients. tf32: float32 on TF32 tensor cores
    (CUDA), the fused ReLU left out (a gate that TF32's rounding flips near zero would move a gradient by a
    whole term), compared at 1% of the reference's largest value."""
    c = _draw(i)
    gen = torch.Generator().manual_seed(i)
    dtype = torch.float32 if c["float32"] or tf32 else torch.float64
    relu = c["relu"] and not tf32

    def rand(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64).to(device, dtype)

    x = strided(rand(c["n"], c["cin"], *c["hw"]), c["x_layout"])
    w = strided(rand(c["cout"], c["cin"] // c["groups"], *c["k"]), c["w_layout"])
    b = rand(c["cout"]) if c["bias"] else None
    kw = dict(stride=c["stride"], padding=c["padding"], dilation=c["dilation"], groups=c["groups"])
    act = "relu" if relu else None
    leaves = [t.detach().clone().requires_grad_() for t in (x, w) + ((b,) if b is not None else ())]
    bias = leaves[2] if b is not None else None
    if c["masked"]:
        y = pixelops.masked_conv2d(leaves[0], leaves[1], bias, c["mask_type"], activation=act, allow_tf32=tf32, **kw)
    else:
        y = pixelops.conv2d(leaves[0], leaves[1], bias, activation=act, allow_tf32=tf32, **kw)

    ref_leaves = [t.detach().double().requires_grad_() for t in leaves]
    w_ref = ref_leaves[1]
    if c["masked"]:
        w_ref = w_ref * pixelops.conv_mask(c["k"], c["mask_type"], dtype=torch.float64, device=device)
    y_ref = F.conv2d(ref_leaves[0], w_ref, ref_leaves[2] if b is not None else None, **kw)
    if relu:
        y_ref = torch.relu(y_ref)

    def close(a, r, what):
        if tf32:
            scale = max(1.0, r.abs().max().item()) if r.numel() else 1.0
            torch.testing.assert_close(a.double(), r, rtol=0, atol=1e-2 * scale, msg=lambda m: f"{what}: {m}")
        else:
            tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
            torch.testing.assert_close(a.double(), r, **tol, msg=lambda m: f"{what}: {m}")

    assert y.shape == y_ref.shape and y.dtype == dtype and y.device == x.device
    close(y, y_ref, "output")
    g = torch.randn(y.shape, generator=gen, dtype=torch.float64)
    grads = torch.autograd.grad(y, leaves, g.to(device, dtype))
    grads_ref = torch.autograd.grad(y_ref, ref_leaves, g.to(device))
    for name, a, r in zip(("input", "weight", "bias"), grads, grads_ref):
        assert a.shape == r.shape and a.dtype == dtype, name
        close(a, r, f"grad {name}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("i", range(CASES), ids=_id)
def test_random_options_match_torch(device, i):
    _check(device, i)


# The same draws in float32 on TF32 tensor cores (allow_tf32=True): the halo kernels' and GEMMs' TF32 products
@pytest.mark.cuda
@pytest.mark.parametrize("i", range(CASES), ids=_id)
def test_random_options_match_torch_tf32(i):
    _check("cuda", i, tf32=True)
