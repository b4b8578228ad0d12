"""conv2d CPU paths added for speed (eager autograd builder, backward blocking for small-channel layers):
each checked against torch in float64 on awkward shapes."""
import pytest
import torch
import torch.nn.functional as F

import pixelops


def _rand(*shape, seed):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen, dtype=torch.float64)


@pytest.mark.parametrize("activation", [None, "relu"])
def test_create_graph_gives_second_derivatives(activation):
    # create_graph=True (a gradient penalty's) sends the eager backward through the backward Function of the
    # torch.func path (tuples of stride/padding from the eager path), whose own backward is the double-backward
    # rule: the gradient, and the gradient of a function of the gradient, as torch's.
    x, w = _rand(2, 3, 7, 6, seed=1).requires_grad_(), _rand(4, 3, 3, 3, seed=2).requires_grad_()
    b = _rand(4, seed=3).requires_grad_()
    grads = []
    for conv in (lambda *a: pixelops.conv2d(*a, padding=(1, 2), stride=(2, 1), activation=activation),
                 lambda *a: (lambda y: y.relu() if activation else y)(F.conv2d(*a, padding=(1, 2), stride=(2, 1)))):
        y = conv(x, w, b)
        gx, gw = torch.autograd.grad(((y + 0.5) ** 3).sum(), (x, w), create_graph=True)
        penalty = gx.square().sum() + (gw * w).sum()
        grads.append((gx, gw, *torch.autograd.grad(penalty, (x, w, b))))
    for o, r in zip(*grads):
        torch.testing.assert_close(o, r, rtol=1e-10, atol=1e-12)


# Convs that take the direct path (padded phase planes read in place, no im2col): awkward widths, dilation,
# groups, asymmetric and over-sized padding, masks, several k blocks (K > 640), partial MR panels, fused
# ReLU, non-contiguous input; forward and every gradient against torch in float64. Each has K = channels per
# group x active taps >= 64, which the forward's direct path asks for (shallower ones gather im2col). The
# grad_input of the stride-1 convs with at least 8 input channels runs the same path (flipped kernel, whose
# reads start further into grad_y where the padding is over-sized; strided ones: tests/test_conv2d.py). Plane rows share their padding columns (PhaseGrid), so the
# pitch is less than a padded row where both sides are padded, and set by the wider side where they differ.
DIRECT = [
    ((2, 8, 9, 13), (5, 3, 3), dict(padding=1), None),
    ((1, 80, 8, 11), (11, 3, 3), dict(padding=1), None),                      # K = 720: two k blocks
    ((2, 12, 10, 9), (6, 3, 3), dict(padding=(4, 3)), None),                  # pad > kernel: grad_x reads from grad_y row 2
    # padding past the kernel's reach: grad_w's stacked images share no more rows than the kernel spans
    ((6, 2, 5, 4), (3, 3, 3), dict(padding=(4, 3), stride=2), None),
    # pads 1 before, 2 after: row pitch set by the wider side; grad_w stacks 3 images, sharing 1 padding row
    ((6, 8, 9, 11), (6, 4, 4), dict(padding="same"), None),
    ((2, 16, 12, 14), (8, 3, 3), dict(padding=(2, 1), dilation=(2, 1), groups=2), None),
    ((3, 5, 11, 10), (9, 5, 5), dict(padding=2), "B"),
    ((2, 18, 10, 10), (9, 3, 3), dict(padding=1), "A"),
    ((2, 22, 9, 12), (7, 1, 3), dict(padding=(0, 1)), None),
    ((1, 16, 6, 30), (8, 3, 3), dict(), None),                                 # valid conv
    ((2, 8, 9, 11), (13, 3, 3), dict(padding=1), None),                        # more out than in: flipped grad_x
    ((2, 1, 12, 12), (5, 3, 3), dict(padding=1), None),                        # one in channel: scattered grad_x
    # grad_w in chunks of 2 images (4 MiB of float64 planes and grad_y rows), a thread taking a full one then a
    # shorter one (on 1 or 2 threads)
    ((5, 16, 80, 80), (16, 3, 3), dict(padding=1), None),
    # strided: phase planes (stride 2 splits each padded plane in 4)
    ((2, 8, 17, 19), (9, 3, 3), dict(stride=2, padding=1), None),
    ((2, 5, 16, 21), (6, 3, 5), dict(stride=(2, 3), padding=(1, 2), dilation=(1, 2)), None),
    ((1, 6, 15, 15), (10, 5, 5), dict(stride=2, padding=2), "B"),
    ((2, 16, 14, 13), (4, 3, 3), dict(stride=(1, 2), padding=(3, 4), groups=2), None),
    ((2, 64, 20, 20), (8, 1, 1), dict(stride=2), None),
]


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("x_shape,w_shape,kw,mask", DIRECT)
def test_direct_path_against_torch(x_shape, w_shape, kw, mask, relu):
    groups = kw.get("groups", 1)
    cout, kh, kwid = w_shape
    x = _rand(*x_shape, seed=sum(x_shape))
    x = x.transpose(2, 3).contiguous().transpose(2, 3).requires_grad_()   # column-major planes
    w = _rand(cout, x_shape[1] // groups, kh, kwid, seed=cout).requires_grad_()
    b = _rand(cout, seed=7).requires_grad_()
    act = "relu" if relu else None
    if mask is None:
        y = pixelops.conv2d(x, w, b, activation=act, **kw)
        wm = w
    else:
        y = pixelops.masked_conv2d(x, w, b, mask_type=mask, activation=act, **kw)
        wm = w * pixelops.conv_mask((kh, kwid), mask, dtype=torch.float64)
    ref = F.conv2d(x, wm, b, **kw)
    if relu:
        ref = torch.relu(ref)
    torch.testing.assert_close(y, ref, rtol=1e-10, atol=1e-10)
    gy = _rand(*y.shape, seed=3)
    got = torch.autograd.grad(y, (x, w, b), gy)
    want = torch.autograd.grad(ref, (x, w, b), gy)
    for a, e in zip(got, want):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-10)


def test_direct_path_float32_and_numpy():
    x, w = _rand(2, 8, 13, 17, seed=11), _rand(10, 8, 3, 3, seed=12)
    ref = F.conv2d(x, w, padding=1)
    torch.testing.assert_close(pixelops.conv2d(x.float(), w.float(), padding=1), ref.float(), rtol=1e-4, atol=1e-4)
    out = pixelops.conv2d(x.numpy()[:, :, ::-1], w.numpy(), padding=1)
    torch.testing.assert_close(torch.from_numpy(out), F.conv2d(x.flip(2), w, padding=1), rtol=1e-10, atol=1e-10)


def _check_in(dtype, x, w, **kw):
    """pixelops.conv2d in dtype against torch in float64 (x, w: float64 leaves), forward and both gradients."""
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    y = pixelops.conv2d(x.to(dtype), w.to(dtype), **kw)
    ref = F.conv2d(x, w, **kw)
    torch.testing.assert_close(y.double(), ref, rtol=tol, atol=tol)
    gy = _rand(*ref.shape, seed=15)
    got = torch.autograd.grad(y, (x, w), gy.to(dtype))
    want = torch.autograd.grad(ref, (x, w), gy)
    for a, e in zip(got, want):
        torch.testing.assert_close(a.double(), e, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("cin", [8, 3])
def test_wide_strided_rows(dtype, cin):
    # Stride 2 takes every other value of an image row with a vector shuffle (copy_run) where a run holds more
    # than one vector: here 38 values, so whole vectors and a scalar tail, in both types. 8 channels (K = 72):
    # the direct path's phase planes; 3 channels (K = 27): the im2col gather.
    x, w = _rand(2, cin, 9, 75, seed=13).requires_grad_(), _rand(6, cin, 3, 3, seed=14).requires_grad_()
    _check_in(dtype, x, w, stride=2, padding=1)


def _poison_scratch(dtype):
    # NaN through every CPU conv path, forward and backward, so that the per-thread work buffers
    # (common/scratch.h), reused without clearing, hold NaN where a later call might read before it writes
    for stride, cin in ((1, 16), (2, 16), (1, 2)):
        x = torch.full((4, cin, 30, 30), float("nan"), dtype=dtype, requires_grad=True)
        w = torch.full((16, cin, 3, 3), float("nan"), dtype=dtype, requires_grad=True)
        y = pixelops.conv2d(x, w, padding=1, stride=stride)
        torch.autograd.grad(y, (x, w), torch.full_like(y, float("nan")))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_reused_work_buffers_are_written_before_read(dtype):
    _poison_scratch(dtype)
    for x_shape, w_shape, kw, _ in DIRECT[:6] + DIRECT[-5:]:
        groups = kw.get("groups", 1)
        x = _rand(*x_shape, seed=21).requires_grad_()
        w = _rand(w_shape[0], x_shape[1] // groups, *w_shape[1:], seed=22).requires_grad_()
        _check_in(dtype, x, w, **kw)


# Weight gradients of many groups over few images, the shape per-sample gradients take (torch.func.vmap puts
# each example in a group of its own): tasks are (group, range of images), each thread summing only the groups
# it touches. Fewer groups than threads (the images split too), more groups than threads, a single image, and
# both weight-gradient paths (the direct one on padded planes; im2col dot products where the grid would waste
# too much: a 3x3 image under padding 2).
@pytest.mark.parametrize("n,groups,cg,mg,hw,kw", [
    (1, 7, 9, 5, (10, 9), dict(padding=1)),
    (3, 2, 4, 6, (8, 11), dict(padding=1, stride=(1, 2))),
    (2, 5, 2, 3, (3, 3), dict(padding=2, dilation=2)),
    (1, 33, 3, 2, (6, 6), dict(padding=1)),
    (5, 1, 8, 4, (7, 5), dict(padding=(2, 1))),
    (40, 2, 16, 16, (30, 30), dict(padding=1)),  # several chunks of images a group (4 MiB of planes each)
])
def test_weight_gradient_of_many_groups_and_few_images(n, groups, cg, mg, hw, kw):
    x = _rand(n, groups * cg, *hw, seed=11).requires_grad_()
    w = _rand(groups * mg, cg, 3, 3, seed=12).requires_grad_()
    b = _rand(groups * mg, seed=13).requires_grad_()
    for masked in (False, True):
        mask = pixelops.conv_mask(3, "B", dtype=torch.float64) if masked else torch.ones(3, 3, dtype=torch.float64)
        y = (pixelops.masked_conv2d(x, w, b, "B", groups=groups, **kw) if masked
             else pixelops.conv2d(x, w, b, groups=groups, **kw))
        ref = F.conv2d(x, w * mask, b, groups=groups, **kw)
        g = _rand(*ref.shape, seed=14)
        for o, r in zip(torch.autograd.grad(y, (x, w, b), g), torch.autograd.grad(ref, (x, w, b), g)):
            torch.testing.assert_close(o, r, rtol=1e-10, atol=1e-12)
