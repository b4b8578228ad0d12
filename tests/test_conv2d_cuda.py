"""The CUDA implicit-GEMM conv2d kernels on the shapes that stress them: many tiles in every GEMM dimension
with ragged edges, the split-K weight gradient (deterministic), masked taps, and the TF32 switch (tensor
cores exactly when allowed). All marked cuda: they skip without a GPU."""
import os

import pytest
import torch
import torch.nn.functional as F

import pixelops
from pixelops.ops.conv2d import mask_taps

pytestmark = pytest.mark.cuda


def _randn(*shape, seed, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen, dtype=torch.float64).to("cuda", dtype)


def _run(x, w, b, g, relu, mask=None, needs=(True, True, True), **kw):
    """y and (grad_x, grad_w, grad_b) of pixelops.conv2d (masked_conv2d with mask "A" or "B") for the output
    gradient g; None for the inputs that `needs` leaves without a gradient."""
    leaves = [t.detach().clone().requires_grad_(n) for t, n in zip((x, w, b), needs)]
    act = "relu" if relu else None
    if mask:
        y = pixelops.masked_conv2d(*leaves, mask, activation=act, **kw)
    else:
        y = pixelops.conv2d(*leaves, activation=act, **kw)
    grads = iter(torch.autograd.grad(y, [t for t, n in zip(leaves, needs) if n], g))
    return (y.detach(), *(next(grads) if n else None for n in needs))


def _reference(x, w, b, g, relu, **kw):
    leaves = [t.detach().double().requires_grad_() for t in (x, w, b)]
    y = F.conv2d(*leaves, **kw)
    y = torch.relu(y) if relu else y
    return (y.detach(), *torch.autograd.grad(y, leaves, g.double()))


# (N, C, H, W), (Cout, kH, kW), kwargs: GEMM sizes off the 64 x 64 x 16 tiles in M, N and K at once
SHAPES = [
    ((3, 37, 19, 21), (70, 3, 3), dict(padding=1)),
    ((2, 20, 23, 17), (130, 2, 3), dict(stride=(2, 3), padding=(1, 2), dilation=(3, 1))),
    ((2, 66, 15, 14), (68, 3, 3), dict(padding=2, dilation=2, groups=2)),
    ((16, 3, 40, 40), (5, 3, 3), dict(padding=1)),     # tiny grad_weight GEMM, long K: many splits
]


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("x_shape,w_shape,kw", SHAPES)
def test_tiles_match_torch_float64(x_shape, w_shape, kw, relu):
    groups = kw.get("groups", 1)
    x = _randn(*x_shape, seed=1)
    w = _randn(w_shape[0], x_shape[1] // groups, *w_shape[1:], seed=2)
    b = _randn(w_shape[0], seed=3)
    g = _randn(*F.conv2d(x, w, None, **kw).shape, seed=4)
    for got, ref, name in zip(_run(x, w, b, g, relu, **kw), _reference(x, w, b, g, relu, **kw),
                              ("output", "grad_input", "grad_weight", "grad_bias")):
        torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10, msg=lambda m: f"{name}: {m}")


# Few input channels a group and at least 16 outputs: grad_input runs as a 1x1 GEMM over grad_y into per-tap
# planes, then a gather (conv2d_taps.cuh); with a fused ReLU, or where PIXELOPS_CONV_DIRECT_GI=1, on the direct
# kernel (checked alike).
TAPS = [
    ((3, 1, 17, 19), (32, 7, 7), dict(padding=3), "A"),                          # PixelCNN's input layer
    ((2, 3, 21, 18), (40, 3, 3), dict(stride=2, padding=1), None),
    ((2, 8, 13, 11), (36, 3, 5), dict(padding=(2, 1), dilation=(1, 2), groups=2), "B"),
]


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("x_shape,w_shape,kw,mask", TAPS)
def test_grad_input_by_taps(x_shape, w_shape, kw, mask, dtype, relu):
    groups = kw.get("groups", 1)
    x = _randn(*x_shape, seed=21, dtype=dtype)
    w = _randn(w_shape[0], x_shape[1] // groups, *w_shape[1:], seed=22, dtype=dtype)
    if mask:
        w = w * pixelops.conv_mask(w_shape[1:], mask, dtype=dtype, device="cuda")
    b = _randn(w_shape[0], seed=23, dtype=dtype)
    g = _randn(*F.conv2d(x, w, None, **kw).shape, seed=24, dtype=dtype)
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-4)

    def run(allow_tf32):  # the masked op skips the masked taps (fewer taps in the GEMM and the gather)
        return _run(x, w, b, g, relu, mask, allow_tf32=allow_tf32, **kw)

    got = run(False)
    # torch's masked conv: the mask inside the graph, so the weight gradient is zero on masked taps too
    leaves = [t.detach().double().requires_grad_() for t in (x, w, b)]
    wm = leaves[1] * pixelops.conv_mask(w_shape[1:], mask, dtype=torch.float64, device="cuda") if mask else leaves[1]
    y_ref = F.conv2d(leaves[0], wm, leaves[2], **kw)
    y_ref = torch.relu(y_ref) if relu else y_ref
    ref = (y_ref.detach(), *torch.autograd.grad(y_ref, leaves, g.double()))
    for a, r, name in zip(got, ref, ("output", "grad_input", "grad_weight", "bias")):
        torch.testing.assert_close(a.double(), r, **tol, msg=lambda m: f"{name}: {m}")
    if dtype == torch.float32 and not relu:  # TF32 in the GEMM when allowed: close, and not bit-equal to fp32
        tf32 = run(True)[1]
        assert (tf32.double() - ref[1]).norm() / ref[1].norm() < 2e-3
        # (PIXELOPS_CONV_DIRECT_GI=1, or PIXELOPS_CONV_FEW_TILED=1 where the tiled kernel takes the layer: float32
        # either way)
        fp32_kernel = (os.environ.get("PIXELOPS_CONV_DIRECT_GI") == "1"
                       or (os.environ.get("PIXELOPS_CONV_FEW_TILED") == "1" and _tiled_takes(x_shape, w_shape, kw)))
        assert torch.equal(tf32, got[1]) == fp32_kernel


def _tiled_takes(x_shape, w_shape, kw):
    """Whether the few-channel tiled kernels (PIXELOPS_CONV_FEW_TILED=1) take a layer (grad_input: without a fused
    ReLU): stride 1, dilation 1 along rows, 3, 5 or 7 taps wide, at most 4 input channels a group."""
    dilation = kw.get("dilation", 1)
    return (kw.get("stride", 1) == 1 and (dilation if isinstance(dilation, int) else dilation[1]) == 1
            and w_shape[-1] in (3, 5, 7) and x_shape[1] // kw.get("groups", 1) <= 4)


# The few-channel tiled kernels' reach (few input channels a group, stride 1; PIXELOPS_CONV_FEW_TILED=1, else
# forward_direct, and grad_input by taps or the direct kernel): tiles across and down the image with edges inside
# them, grad_y's channel chunks and the forward's channel blocks past the last channel, a mask's short last
# kernel row, dilated rows, 1 to 4 channels a group, uneven padding, an input and a grad_y that are views
# (strided rows), bias, fused ReLU; every gradient. float32 against torch in float64.
TILED = [
    ((2, 1, 30, 70), (37, 7, 7), dict(padding=3), "A", False),
    ((1, 6, 17, 33), (33, 5, 5), dict(padding=(2, 1), dilation=(2, 1), groups=3), "B", True),
    ((2, 9, 12, 40), (21, 3, 3), dict(padding=(0, 2), groups=3), "A", False),
    ((1, 4, 9, 5), (16, 3, 7), dict(padding=(1, 3), dilation=(3, 1)), None, True),
    ((2, 3, 11, 35), (40, 7, 7), dict(padding=3), "B", False),  # 3 channels: the weight gradient's 2 row groups
]


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("x_shape,w_shape,kw,mask,view", TILED)
def test_few_channels_tiled(x_shape, w_shape, kw, mask, view, relu):
    groups = kw.get("groups", 1)
    x = _randn(*x_shape[:3], 2 * x_shape[3], seed=31, dtype=torch.float32)
    x = x[..., ::2] if view else x[..., :x_shape[3]].contiguous()
    w = _randn(w_shape[0], x_shape[1] // groups, *w_shape[1:], seed=32, dtype=torch.float32)
    b = _randn(w_shape[0], seed=34, dtype=torch.float32)
    y_shape = F.conv2d(x, w, None, **kw).shape
    g = _randn(*y_shape[:3], 2 * y_shape[3], seed=33, dtype=torch.float32)
    g = g[..., ::2] if view else g[..., :y_shape[3]].contiguous()
    leaves = [t.clone().requires_grad_() for t in (x, w, b)]
    act = "relu" if relu else None
    conv = (lambda a, c, d: pixelops.masked_conv2d(a, c, d, mask, activation=act, **kw)) if mask else \
        (lambda a, c, d: pixelops.conv2d(a, c, d, activation=act, **kw))
    y = conv(*leaves)
    got = (y, *torch.autograd.grad(y, leaves, g))
    m = pixelops.conv_mask(w_shape[1:], mask, dtype=torch.float64, device="cuda") if mask else 1.0
    refs = [t.double().requires_grad_() for t in (x, w, b)]
    y_ref = F.conv2d(refs[0], refs[1] * m, refs[2], **kw)
    y_ref = torch.relu(y_ref) if relu else y_ref
    ref = (y_ref, *torch.autograd.grad(y_ref, refs, g.double()))
    for a, r, name in zip(got, ref, ("output", "grad_input", "grad_weight", "grad_bias")):
        torch.testing.assert_close(a.double(), r.detach(), rtol=1e-4, atol=1e-4, msg=lambda msg: f"{name}: {msg}")


def test_side_streams_match_the_default_stream():
    # Workspaces (the halo's packed weights, split-K partial sums, per-tap planes) are stream-ordered: layers run
    # on two side streams at once, several times over, give what they give on the default stream, bit for bit
    # (the kernels add in a fixed order). With PIXELOPS_WORKSPACE_ARENA=1, each stream's arena serves its own.
    layers = [((4, 16, 20, 22), (24, 3, 3), dict(padding=1), None), ((3, 1, 28, 28), (32, 7, 7), dict(padding=3), "A"),
              ((2, 8, 12, 40), (40, 3, 3), dict(padding=1, dilation=(2, 1)), "B")]
    data = []
    for k, (x_shape, w_shape, kw, mask) in enumerate(layers):
        x = _randn(*x_shape, seed=40 + k, dtype=torch.float32)
        w = _randn(w_shape[0], x_shape[1], *w_shape[1:], seed=50 + k, dtype=torch.float32)
        b = _randn(w_shape[0], seed=60 + k, dtype=torch.float32)
        g = _randn(*F.conv2d(x, w, None, **kw).shape, seed=70 + k, dtype=torch.float32)
        data.append(((x, w, b, g, False, mask), kw))
    ref = [_run(*args, **kw) for args, kw in data]
    streams = [torch.cuda.Stream(), torch.cuda.Stream()]
    got = []
    for s in streams:
        s.wait_stream(torch.cuda.current_stream())
    for _ in range(3):
        for s in streams:
            with torch.cuda.stream(s):
                got.append([_run(*args, **kw) for args, kw in data])
    torch.cuda.synchronize()
    for run in got:
        for outs, refs in zip(run, ref):
            assert all(torch.equal(o, r) for o, r in zip(outs, refs))


def test_grad_weight_is_deterministic():
    # split-K partial sums are added in a fixed order, not with atomics: repeated runs agree bit for bit
    x, w = _randn(16, 8, 32, 32, seed=5, dtype=torch.float32), _randn(8, 8, 3, 3, seed=6, dtype=torch.float32)
    b, g = _randn(8, seed=8, dtype=torch.float32), _randn(16, 8, 32, 32, seed=7, dtype=torch.float32)
    first = _run(x, w, b, g, True, padding=1, allow_tf32=False)
    second = _run(x, w, b, g, True, padding=1, allow_tf32=False)
    assert torch.equal(first[2], second[2]) and torch.equal(first[3], second[3])


# float32 weight gradients on the SIMT GEMM whose columns (channels x taps) pad unevenly into tiles, over 70
# rows (two row tiles, the second ragged): 32 x 9 = 288 and mask B's 56 x 5 = 280 (on three 96-wide tiles,
# PIXELOPS_CONV_GW_TILE96, the last ragged for 280), 40 x 9 = 360 and mask B's 64 x 5 = 320 (128-wide tiles
# either way). grad_y as the first columns of a wider tensor keeps the halo weight gradient (contiguous planes
# only) off them, so the GEMM runs, with the fused ReLU's gate in its loaders; a contiguous grad_y goes to the
# halo kernel (GwSimt), the gate applied first.
@pytest.mark.parametrize("strided_grad", [True, False])
@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("cin,mask", [(32, None), (56, "B"), (40, None), (64, "B")])
def test_float32_weight_gradient_column_tiles(cin, mask, relu, strided_grad):
    x, w = _randn(3, cin, 11, 13, seed=30, dtype=torch.float32), _randn(70, cin, 3, 3, seed=31, dtype=torch.float32)
    b, g = _randn(70, seed=32, dtype=torch.float32), _randn(3, 70, 11, 13, seed=33, dtype=torch.float32)
    if strided_grad:
        wide = _randn(3, 70, 11, 16, seed=34, dtype=torch.float32)
        wide[..., :13] = g
        g = wide[..., :13]
    m = pixelops.conv_mask(3, mask, dtype=torch.float32, device="cuda") if mask else torch.ones_like(w[0, 0])
    kw = dict(mask=mask) if mask else dict(padding=1)
    got = _run(x, w, b, g, relu, allow_tf32=False, **kw)
    y, gx, gw, gb = _reference(x, w * m, b, g, relu, padding=1)
    ref = (y, gx, gw * m, gb)  # the masked taps' weight gradient is zero
    for a, r, name in zip(got, ref, ("output", "grad_input", "grad_weight", "grad_bias")):
        torch.testing.assert_close(a.double(), r, rtol=1e-4, atol=1e-4 * r.abs().max().item(),
                                   msg=lambda m: f"{name}: {m}")
    if mask:  # masked taps' weight gradient exactly zero
        assert (got[2][:, :, 2] == 0).all() and (got[2][:, :, 1, 1 + (mask == "B"):] == 0).all()


@pytest.mark.parametrize("mask_type", ["A", "B"])
def test_masked_taps_across_tiles(mask_type):
    x, w, b = _randn(2, 24, 13, 15, seed=9), _randn(72, 24, 5, 5, seed=10), _randn(72, seed=11)
    mask = pixelops.conv_mask(5, mask_type, dtype=torch.float64, device="cuda")
    leaves = [t.clone().requires_grad_() for t in (x, w, b)]
    y = pixelops.masked_conv2d(*leaves, mask_type, activation="relu")
    g = torch.randn_like(y)
    ref_leaves = [t.clone().requires_grad_() for t in (x, w, b)]
    y_ref = torch.relu(F.conv2d(ref_leaves[0], ref_leaves[1] * mask, ref_leaves[2], padding=2))
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    for a, r in zip(torch.autograd.grad(y, leaves, g), torch.autograd.grad(y_ref, ref_leaves, g)):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-10)


def _relative_errors(allow_tf32, cudnn_tf32=False):
    x, w, b = (_randn(4, 64, 16, 16, seed=12, dtype=torch.float32), _randn(64, 64, 3, 3, seed=13, dtype=torch.float32),
               _randn(64, seed=14, dtype=torch.float32))
    g = _randn(4, 64, 16, 16, seed=15, dtype=torch.float32)
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=cudnn_tf32):
        got = _run(x, w, b, g, False, padding=1, allow_tf32=allow_tf32)
    ref = _reference(x, w, b, g, False, padding=1)
    return [((a.double() - r).abs().max() / r.abs().max()).item() for a, r in zip(got[:3], ref[:3])]


@pytest.mark.parametrize("allow_tf32,cudnn_tf32,tf32", [(True, False, True), (False, True, False),
                                                          (None, True, True), (None, False, False)])
def test_tf32_exactly_when_allowed(allow_tf32, cudnn_tf32, tf32):
    # TF32 keeps 10 mantissa bits: relative errors near 1e-4..1e-3 over a K of 576, against ~1e-7 in fp32.
    for name, err in zip(("output", "grad_input", "grad_weight"), _relative_errors(allow_tf32, cudnn_tf32)):
        if tf32:
            assert 1e-5 < err < 1e-2, (name, err)
        else:
            assert err < 1e-5, (name, err)


# The shared-memory halo kernels (conv2d_halo.cuh, conv2d_halo_grad_weight.cuh). Under TF32 the float32
# forward, and grad_input at stride 1 and grad_weight without a ReLU gate, run from the halo on mma.sync; in
# float32 without TF32 the forward, stride-1 grad_input and grad_weight of layers with more than 32 output rows
# run on its FMA product (HaloSimt, GwSimt; PIXELOPS_CONV_HALO_GW_SIMT=0 puts grad_weight back on the GEMM),
# by default (PIXELOPS_CONV_HALO_WIDE) layers of 17 to 32 rows, with
# PIXELOPS_CONV_HALO_PHASES=1 a strided layer's grad_input, a launch per stride phase (a phase of one tap on the
# GEMM unless in flat mode); the others on the GEMMs. Tiles of 128 pixels (TF32: 96 where those take fewer
# waves, as in all of these but the last, less than one; PIXELOPS_CONV_HALO_NARROW=0 keeps 128) that run across
# image rows and images, ragged channel chunks and output rows, strides and dilation (forward), masks, groups,
# a strided halo that needs the larger shared-memory budget; x contiguous (rows copied 16 bytes at a time where
# they are 16-byte aligned), every other column of a wider tensor, or the first columns of one.
HALO = [
    ((3, 16, 9, 11), (70, 3, 3), dict(padding=1), None, "contiguous"),
    ((2, 16, 8, 12), (24, 3, 3), dict(padding=1), None, "contiguous"),
    ((2, 16, 9, 10), (24, 3, 3), dict(padding=1), None, "narrow"),
    ((2, 12, 13, 20), (9, 3, 3), dict(stride=2, padding=(1, 2), dilation=(2, 1)), None, "every other"),
    ((2, 72, 6, 7), (8, 1, 2), dict(groups=2), None, "contiguous"),
    ((5, 24, 3, 4), (8, 3, 3), dict(padding=1), "A", "contiguous"),
    ((2, 24, 10, 9), (12, 5, 5), dict(padding=(2, 1), dilation=(1, 2)), "B", "every other"),
    ((2, 16, 8, 7), (80, 3, 3), dict(padding=1, groups=2), None, "contiguous"),
    # 32 rows or fewer (forward: output channels, grad_input: input channels a group): in float32 the GEMMs'
    # wide layout (32 rows x 256 pixels; float32 from 17 rows), or with PIXELOPS_CONV_HALO_WIDE=0 in float32 the
    # GEMMs' 32-row tile, in TF32 the 64-row halo tile
    ((3, 32, 9, 11), (20, 3, 3), dict(padding=1), None, "contiguous"),
    ((2, 24, 10, 9), (30, 5, 5), dict(padding=2), "B", "every other"),
    ((2, 16, 8, 9), (12, 3, 3), dict(padding=1), None, "contiguous"),
    # one tap: the halo's flat mode, both products (16-byte copies where planes are whole multiples of 4 floats,
    # else by element; tiles across images; in float32 17-32 rows in the wide layout too), or the GEMMs with
    # PIXELOPS_CONV_HALO_FLAT=0
    ((3, 72, 7, 9), (20, 1, 1), {}, None, "contiguous"),
    ((3, 40, 12, 12), (70, 1, 1), {}, None, "contiguous"),
    ((2, 36, 9, 8), (24, 1, 1), dict(groups=2), None, "every other"),
    ((2, 80, 9, 8), (24, 1, 1), dict(stride=2), None, "every other"),
    ((2, 64, 9, 56), (16, 3, 3), dict(stride=2, padding=1), None, "contiguous"),  # over the default budget
    # the weight gradient's two stages over two blocks' budget: on the halo at one block an SM with
    # PIXELOPS_CONV_HALO_GW_ONE_BLOCK=1 (40 rows: GwSimt in float32), else on the GEMM
    ((1, 16, 20, 56), (40, 3, 3), dict(stride=2, padding=1), None, "every other"),
    # strided grad_input by phase (PIXELOPS_CONV_HALO_PHASES=1): 5x5 stride 2 (phases of 9, 6, 6 and 4 taps),
    # 3x3 (4, 2, 2 and a 1-tap phase), strides 2 x 1 with groups, a masked 5x5
    ((2, 40, 11, 13), (24, 5, 5), dict(stride=2, padding=2), None, "contiguous"),
    ((2, 48, 12, 11), (36, 3, 3), dict(stride=2, padding=1), None, "every other"),
    ((3, 72, 9, 10), (24, 3, 3), dict(stride=(2, 1), padding=1, groups=2), None, "contiguous"),
    ((2, 40, 12, 13), (20, 5, 5), dict(stride=2, padding=2), "A", "contiguous"),
    # pcnn_maskB's layer: several waves of 128-pixel tiles, which it keeps
    ((64, 64, 28, 28), (64, 3, 3), dict(padding=1), "B", "contiguous"),
    # res_s2's forward at a quarter of its batch: 98 tiles of 128 pixels, 131 of 96 under TF32 (narrow tiles)
    ((8, 64, 56, 56), (128, 3, 3), dict(stride=2, padding=1), None, "contiguous"),
]


# An element's error: TF32 keeps 10 mantissa bits, near 1e-3 of the spread of the outputs; float32 sums over K
# of a few thousand, near 1e-6 of it. A wrong tap, pixel or channel is of the order of the spread itself.
@pytest.mark.parametrize("tf32,tol", [(True, 1e-2), (False, 1e-5)])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("x_shape,w_shape,kw,mask,layout", HALO)
def test_halo_matches_float64(x_shape, w_shape, kw, mask, layout, relu, tf32, tol):
    groups = kw.get("groups", 1)
    n, c, h, wd = x_shape
    x = _randn(n, c, h, 2 * wd, seed=31, dtype=torch.float32)
    x = {"contiguous": x[..., :wd].contiguous(), "every other": x[..., ::2], "narrow": x[..., :wd]}[layout]
    w = _randn(w_shape[0], c // groups, *w_shape[1:], seed=32, dtype=torch.float32)
    b = _randn(w_shape[0], seed=33, dtype=torch.float32)
    wm = w * pixelops.conv_mask(w_shape[1:], mask, dtype=torch.float32, device="cuda") if mask else w
    g = _randn(*F.conv2d(x, w, None, **kw).shape, seed=34, dtype=torch.float32)
    got = _run(x, w, b, g, relu, mask, allow_tf32=tf32, **kw)
    # under a fused ReLU the gradient is gated by pixelops' own output (outputs near 0 may differ in sign)
    ref = _reference(x, wm, b, g * (got[0] > 0) if relu else g, False, **kw)
    if relu:
        ref = (ref[0].relu(), *ref[1:])
    for a, r, name in zip(got, ref, ("output", "grad_input", "grad_weight", "grad_bias")):
        if name == "grad_weight" and mask:
            r = r * pixelops.conv_mask(w_shape[1:], mask, dtype=torch.float64, device="cuda")
            assert torch.all(a[..., pixelops.conv_mask(w_shape[1:], mask, device="cuda") == 0] == 0), name
        err = (a.double() - r).abs().max().item()
        assert err < tol * r.std().item() + 1e-6, (name, err, r.std().item())
    taps = mask_taps(w_shape[1:], mask) if mask else w_shape[1] * w_shape[2]
    if tf32 and c // groups * taps > 64:  # (else the direct kernel, in float32)
        fp32 = pixelops.conv2d(x, wm, b, activation="relu" if relu else None, allow_tf32=False, **kw)
        assert not torch.equal(got[0], fp32)  # tensor cores were used


# grad_bias on its own kernels (where no weight gradient is asked for) reads grad_y (and y under a fused ReLU) 16
# bytes at a time where every plane is whole 16-byte pieces, element by element where the planes are contiguous
# runs otherwise, and by row and column where they are not. Each layout of grad_y below takes one of those
# (float32: 4 floats a piece; float16: 8). With the weight gradient, grad_bias is one more column of its partial
# sums instead: the few-channel kernel's column of ones (6 channels), the GEMM's row sums (20).
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("hw,layout", [((12, 10), "contiguous"),    # 120 pixels: 16-byte pieces (float16: 15)
                                       ((7, 9), "contiguous"),      # 63 pixels: element by element
                                       ((12, 10), "offset"),        # one element in: not 16-byte aligned
                                       ((12, 10), "every other")])  # strided rows: row and column
@pytest.mark.parametrize("channels,with_weight", [(6, False), (6, True), (20, True)])
def test_grad_bias_read_modes(hw, layout, relu, dtype, channels, with_weight):
    h, wd = hw
    x = _randn(5, channels, h, wd, seed=41, dtype=dtype)
    w = _randn(7, channels, 3, 3, seed=42, dtype=dtype)
    b = _randn(7, seed=43, dtype=dtype)
    big = _randn(5 * 7 * h * 2 * wd + 1, seed=44, dtype=dtype)
    g = {"contiguous": big[:5 * 7 * h * wd].view(5, 7, h, wd),
         "offset": big[1:1 + 5 * 7 * h * wd].view(5, 7, h, wd),
         "every other": big[:5 * 7 * h * 2 * wd].view(5, 7, h, 2 * wd)[..., ::2]}[layout]
    got = _run(x, w, b, g, relu, padding=1, allow_tf32=False, needs=(True, with_weight, True))
    gate = (got[0] > 0) if relu else torch.ones_like(got[0], dtype=torch.bool)
    ref = (g.double() * gate).sum((0, 2, 3))
    tol = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 2e-3}[dtype]
    scale = (g.double() * gate).abs().sum((0, 2, 3)).max().item()
    assert (got[3].double() - ref).abs().max().item() <= tol * scale


# The float32 weight gradient of 1x1 layers, TF32 or not: the pointwise GEMM (conv2d_pointwise_grad_weight.cuh)
# by default, the implicit GEMM where PIXELOPS_CONV_PW_GW=0 (gpu_check runs this file both ways). The pointwise
# GEMM takes the layers whose planes are whole 16-byte pieces and leaves the others to the implicit GEMM.
# (More than 64 input channels a group: fewer take the few-channel direct kernel, in float32.)
@pytest.mark.parametrize("x_shape,cout,groups,layout", [
    ((3, 74, 4, 5), 70, 1, "contiguous"),       # ragged rows and channels, 20-pixel images
    ((2, 260, 8, 8), 24, 1, "channels apart"),  # 3 channel tiles; x a slice of a wider tensor's channels
    ((5, 132, 6, 6), 130, 2, "contiguous"),     # groups, 36-pixel images: steps across images
    ((2, 80, 40, 40), 8, 1, "contiguous"),      # long K: many splits
    ((2, 72, 5, 5), 24, 1, "contiguous"),       # 25-pixel planes: not 16-byte pieces (the GEMM)
    ((2, 72, 6, 8), 24, 1, "every other"),      # strided rows (the GEMM)
])
@pytest.mark.parametrize("tf32,tol", [(True, 1e-2), (False, 1e-5)])
def test_pointwise_weight_gradient(x_shape, cout, groups, layout, tf32, tol):
    n, c, h, wd = x_shape
    if layout == "channels apart":
        x = _randn(n, c + 4, h, wd, seed=51, dtype=torch.float32)[:, 2:2 + c]
    elif layout == "every other":
        x = _randn(n, c, h, 2 * wd, seed=51, dtype=torch.float32)[..., ::2]
    else:
        x = _randn(n, c, h, wd, seed=51, dtype=torch.float32)
    w = _randn(cout, c // groups, 1, 1, seed=52, dtype=torch.float32)
    b = _randn(cout, seed=53, dtype=torch.float32)
    g = _randn(n, cout, h, wd, seed=54, dtype=torch.float32)
    got = _run(x, w, b, g, False, groups=groups, allow_tf32=tf32)
    ref = _reference(x, w, b, g, False, groups=groups)
    for a, r, name in zip(got, ref, ("output", "grad_input", "grad_weight", "grad_bias")):
        err = (a.double() - r).abs().max().item()
        assert err < tol * r.std().item() + 1e-6, (name, err, r.std().item())
    if tf32:
        exact = _run(x, w, b, g, False, groups=groups, allow_tf32=False)
        assert not torch.equal(got[2], exact[2])  # tensor cores were used
