"""pixelops.cross_entropy against torch.nn.functional.cross_entropy: every option, forward and backward, in
float64 references; layouts, dtypes, gradcheck, inplace_backward, numpy, torch.compile, bad input."""
import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import pixelops
from _util import DEVICES, strided

# (C), (N, C), (N, C, d1, d2), and the PixelCNN layout (N, 256, H, W) with an odd H*W
SHAPES = [(7,), (5, 11), (4, 13, 3, 5), (3, 256, 3, 7)]
LAYOUTS = ["contiguous", "channels_last", "transposed", "sliced", "offset"]
F32_TOL = dict(rtol=2e-5, atol=2e-6)


def _layout(x, layout):
    if layout == "channels_last":
        return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else strided(x, "transposed")
    return strided(x, layout)


def _logits(shape, dtype, device, layout="contiguous", scale=3.0, requires_grad=True):
    x = (torch.randn(shape, dtype=torch.float64, device=device) * scale).to(dtype)
    return _layout(x, layout).requires_grad_(requires_grad)


def _classes(shape):
    return shape[0] if len(shape) == 1 else shape[1]


def _index_target(shape, device, ignore_index=-100, ignored=0.3, dtype=torch.int64):
    """Random class indices of the target shape, about `ignored` of them set to ignore_index."""
    tshape = shape[:1] + shape[2:] if len(shape) > 1 else ()
    C = _classes(shape)
    t = torch.randint(0, min(C, 256), tshape, device=device)
    if ignore_index < 0 and ignored > 0:
        drop = torch.rand(tshape, device=device) < ignored
        t = torch.where(drop, torch.full_like(t, ignore_index), t)
    return t.to(dtype)


def _prob_target(shape, dtype, device):
    return torch.softmax(torch.randn(shape, dtype=torch.float64, device=device), dim=0 if len(shape) == 1 else 1).to(dtype)


def _weight(C, dtype, device):
    return (torch.rand(C, dtype=torch.float64, device=device) + 0.5).to(dtype)


def _reference(x, target, weight, ignore_index, reduction, eps, grad_out):
    # torch on the CPU in float64 for every device: torch's own CUDA kernel returns 0 instead of NaN for the
    # 'mean' of an unbatched input whose one target is ignored (0/0); pixelops gives NaN on both devices.
    xr = x.detach().double().cpu().requires_grad_()
    tr = (target.double() if target.is_floating_point() else target.long()).cpu()
    loss = F.cross_entropy(xr, tr, None if weight is None else weight.double().cpu(), ignore_index=ignore_index,
                           reduction=reduction, label_smoothing=eps)
    (gx,) = torch.autograd.grad(loss, xr, grad_out.double().cpu())
    return loss.to(x.device), gx.to(x.device)


def _check(x, target, weight=None, ignore_index=-100, reduction="mean", eps=0.0, tol=None):
    loss = pixelops.cross_entropy(x, target, weight, ignore_index=ignore_index, reduction=reduction,
                                  label_smoothing=eps)
    grad_out = torch.randn(loss.shape, dtype=torch.float64, device=x.device).to(x.dtype)
    (gx,) = torch.autograd.grad(loss, x, grad_out)
    ref_loss, ref_gx = _reference(x, target, weight, ignore_index, reduction, eps, grad_out)
    assert loss.dtype == x.dtype and loss.shape == ref_loss.shape and loss.device == x.device
    assert gx.shape == x.shape
    tol = tol or ({} if x.dtype == torch.float64 else F32_TOL)
    torch.testing.assert_close(loss.double(), ref_loss, equal_nan=True, **tol)
    torch.testing.assert_close(gx.double(), ref_gx, equal_nan=True, **tol)


# ---- every option against torch --------------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_class_indices_every_option(device, shape, dtype):
    C = _classes(shape)
    for weighted, reduction, eps, ignore_index in itertools.product(
            [False, True], ["none", "mean", "sum"], [0.0, 0.3], [-100, 1]):
        x = _logits(shape, dtype, device)
        t = _index_target(shape, device, ignore_index)
        w = _weight(C, dtype, device) if weighted else None
        _check(x, t, w, ignore_index, reduction, eps)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_class_probabilities_every_option(device, shape, dtype):
    C = _classes(shape)
    for weighted, reduction, eps in itertools.product([False, True], ["none", "mean", "sum"], [0.0, 0.3]):
        x = _logits(shape, dtype, device)
        q = _prob_target(shape, dtype, device)
        w = _weight(C, dtype, device) if weighted else None
        _check(x, q, w, -100, reduction, eps)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", [(33, 70), (2, 40, 9, 11), (3, 256, 5, 13)])
def test_logit_layouts(device, layout, shape):
    # (N, C, H, W) contiguous reads the channels with stride H*W (the tiled path); channels_last and the
    # transposed / sliced / offset views take the other paths of the kernel. No layout may need a copy to be right.
    for reduction, eps, weighted in [("mean", 0.0, False), ("none", 0.2, True), ("sum", 0.0, True)]:
        x = _logits(shape, torch.float64, device, layout)
        t = _index_target(shape, device)
        w = _weight(_classes(shape), torch.float64, device) if weighted else None
        _check(x, t, w, -100, reduction, eps)
        _check(_logits(shape, torch.float64, device, layout), _layout(_prob_target(shape, torch.float64, device), layout),
               w, -100, reduction, eps)


@pytest.mark.parametrize("device", DEVICES)
def test_strided_targets_and_weight(device):
    x = _logits((6, 9, 4, 5), torch.float64, device)
    t = _index_target((6, 9, 4, 5), device).transpose(1, 2).contiguous().transpose(1, 2)
    w = _weight(18, torch.float64, device)[::2]
    _check(x, t, w, -100, "mean", 0.1)


@pytest.mark.parametrize("device", DEVICES)
def test_uint8_targets(device):
    # PyTorch takes Byte class indices too: PixelCNN's pixel values are its targets.
    x = _logits((4, 256, 3, 3), torch.float64, device)
    t = torch.randint(0, 256, (4, 3, 3), dtype=torch.uint8, device=device)
    _check(x, t, None, -100, "mean", 0.0)
    _check(x, t, None, 7, "none", 0.1)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("C", [1, 2, 3, 15, 16, 17, 1000, 4099])
def test_class_counts_around_vector_widths(device, C):
    _check(_logits((5, C), torch.float32, device), _index_target((5, C), device), None, -100, "mean", 0.0)
    _check(_logits((2, C, 67), torch.float32, device), _index_target((2, C, 67), device), None, -100, "none", 0.1)


def test_large_batches_cross_tile_and_thread_boundaries():
    # More rows / tiles than threads and odd counts, so every chunk boundary of the parallel loops is crossed.
    _check(_logits((1031, 37), torch.float64, "cpu"), _index_target((1031, 37), "cpu"), None, -100, "sum", 0.0)
    _check(_logits((5, 19, 131, 3), torch.float64, "cpu"), _index_target((5, 19, 131, 3), "cpu"), None, -100, "mean", 0.2)


# ---- PyTorch's corner cases ----------------------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("eps", [0.0, 0.4])
def test_all_ignored_mean_is_nan_like_torch(device, eps):
    x = _logits((4, 6, 3), torch.float64, device)
    t = torch.full((4, 3), -100, device=device)
    for reduction in ("mean", "sum", "none"):
        _check(x, t, _weight(6, torch.float64, device), -100, reduction, eps)
    loss = pixelops.cross_entropy(x, t, label_smoothing=eps)
    assert torch.isnan(loss)
    loss.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))  # torch's gradient here is zeros, not NaN


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("layout", ["contiguous", "transposed"])
def test_non_finite_incoming_gradient_leaves_ignored_rows_zero(device, dtype, layout):
    # PyTorch's backward writes zeros at ignored rows whatever gradient arrives; a product with the forward's
    # zeros would make them NaN. 'none' with NaN and inf at some positions (ignored and not), and 'mean' and
    # 'sum' with a NaN scalar: NaN exactly where torch has it (its rows not ignored), zero at the ignored ones.
    x = _logits((9, 5, 4), dtype, device, layout)
    t = _index_target((9, 5, 4), device, ignored=0.4)
    t[0, 0], t[1, 1] = -100, 2  # one ignored and one kept position, where the NaN goes
    for reduction in ("none", "mean", "sum"):
        if reduction == "none":
            grad_out = torch.randn(9, 4, dtype=dtype, device=device)
            grad_out[0, 0], grad_out[1, 1] = float("nan"), float("nan")
            grad_out[t == -100] = float("inf")
        else:
            grad_out = torch.tensor(float("nan"), dtype=dtype, device=device)
        (gx,) = torch.autograd.grad(pixelops.cross_entropy(x, t, reduction=reduction), x, grad_out)
        xr = x.detach().double().cpu().requires_grad_()
        (ref,) = torch.autograd.grad(F.cross_entropy(xr, t.cpu(), reduction=reduction), xr, grad_out.double().cpu())
        torch.testing.assert_close(gx.double().cpu(), ref, equal_nan=True, **F32_TOL)
        assert torch.isnan(gx).any() and (gx.transpose(1, 2)[t == -100] == 0).all()


@pytest.mark.parametrize("device", DEVICES)
def test_weighted_mean_divides_by_the_kept_weights(device):
    x = _logits((6, 4), torch.float64, device)
    t = torch.tensor([0, 1, 2, 3, -100, 1], device=device)
    w = torch.tensor([0.5, 2.0, 1.0, 3.0], dtype=torch.float64, device=device)
    loss = pixelops.cross_entropy(x, t, w)
    per_row = pixelops.cross_entropy(x, t, w, reduction="none")
    kept = w[t[t != -100]].sum()
    torch.testing.assert_close(loss, per_row.sum() / kept)
    _check(x, t, w)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("spatial", [(), (2, 3)])
def test_empty_batch(device, spatial):
    # forward and backward, the incoming gradient not 1 (an empty expanded gradient has no data to read: the
    # CPU backward once read its first value anyway, and crashed)
    for probs in (False, True):
        target = (torch.zeros(0, 5, *spatial, device=device, dtype=torch.float64) if probs
                  else torch.zeros(0, *spatial, dtype=torch.int64, device=device))
        for reduction in ("mean", "sum", "none"):
            x = torch.randn(0, 5, *spatial, dtype=torch.float64, device=device, requires_grad=True)
            t = target.clone().requires_grad_(probs)  # probabilities get a gradient too (a mean's divides by 0)
            x_ref, t_ref = x.detach().clone().requires_grad_(), target.clone().requires_grad_(probs)
            ref = F.cross_entropy(x_ref, t_ref, reduction=reduction)
            out = pixelops.cross_entropy(x, t, reduction=reduction)
            torch.testing.assert_close(out, ref, equal_nan=True)
            out.backward(torch.full_like(out, 3.0))
            ref.backward(torch.full_like(ref, 3.0))
            assert x.grad.shape == x_ref.grad.shape == x.shape
            if probs:
                assert t.grad.shape == t_ref.grad.shape == t.shape


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_stable_for_huge_logits(device, dtype):
    # Logits of magnitude 1e4 and spread 1e4: exp overflows without the max shift.
    x = _logits((16, 50), dtype, device, scale=1e4)
    t = _index_target((16, 50), device)
    tol = None if dtype == torch.float64 else dict(rtol=1e-5, atol=5e-3)  # float32 spacing at 1e4 is 1e-3
    _check(x, t, None, -100, "none", 0.0, tol)
    _check(_logits((16, 50), dtype, device, scale=1e4), t, None, -100, "mean", 0.3, tol)
    x = (torch.randn(4, 30, dtype=torch.float64, device=device) + 3e4).to(dtype).requires_grad_()
    _check(x, _index_target((4, 30), device), None, -100, "sum", 0.0, tol)


def test_gradcheck_float64():
    torch.manual_seed(0)
    x = torch.randn(4, 6, 3, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([[0, 5, -100], [2, 2, 1], [3, -100, 4], [1, 0, 5]])
    w = torch.rand(6, dtype=torch.float64) + 0.5
    q = torch.softmax(torch.randn(4, 6, 3, dtype=torch.float64), 1)
    for reduction in ("mean", "sum", "none"):
        assert torch.autograd.gradcheck(
            lambda x: pixelops.cross_entropy(x, t, w, reduction=reduction, label_smoothing=0.2), (x,))
        assert torch.autograd.gradcheck(lambda x: pixelops.cross_entropy(x, q, w, reduction=reduction), (x,))
    xt = torch.randn(6, 5, dtype=torch.float64).t().requires_grad_()  # channel stride 5: the strided path
    assert torch.autograd.gradcheck(lambda x: pixelops.cross_entropy(x, torch.tensor([0, 5, 2, 3, 1])), (xt,))


def test_unbatched_input():
    x = _logits((9,), torch.float64, "cpu")
    _check(x, torch.tensor(4), _weight(9, torch.float64, "cpu"), -100, "mean", 0.1)
    _check(x, torch.tensor(4), None, -100, "none", 0.0)
    _check(x, _prob_target((9,), torch.float64, "cpu"), None, -100, "sum", 0.0)


# ---- autograd behaviour ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
def test_input_left_alone_by_default(device):
    x = _logits((8, 10, 3), torch.float32, device)
    before = x.detach().clone()
    pixelops.cross_entropy(x, _index_target((8, 10, 3), device)).backward()
    assert torch.equal(x.detach(), before)


def test_no_grad_gives_plain_tensor():
    x = _logits((4, 5), torch.float32, "cpu")
    with torch.no_grad():
        loss = pixelops.cross_entropy(x, torch.tensor([0, 1, 2, 3]))
    assert not loss.requires_grad and loss.grad_fn is None
    assert not pixelops.cross_entropy(x.detach(), torch.tensor([0, 1, 2, 3])).requires_grad


def test_backward_twice_with_retain_graph():
    x = _logits((6, 7), torch.float64, "cpu")
    t = _index_target((6, 7), "cpu")
    loss = pixelops.cross_entropy(x, t, label_smoothing=0.1)
    loss.backward(retain_graph=True)
    first = x.grad.clone()
    loss.backward()
    torch.testing.assert_close(x.grad, 2 * first)
    _, ref = _reference(x, t, None, -100, "mean", 0.1, torch.tensor(1.0, dtype=torch.float64))
    torch.testing.assert_close(first, ref)


def test_loss_used_twice_in_a_graph():
    x = _logits((5, 4, 2), torch.float64, "cpu")
    t = _index_target((5, 4, 2), "cpu")
    loss = pixelops.cross_entropy(x, t, reduction="none")
    (3 * loss.sum() + loss[0, 1]).backward()
    g = torch.full((5, 2), 3.0, dtype=torch.float64)
    g[0, 1] += 1
    _, ref = _reference(x, t, None, -100, "none", 0.0, g)
    torch.testing.assert_close(x.grad, ref)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(9, 33), (3, 20, 4, 5)])
def test_inplace_backward_matches_and_reuses_logits_memory(device, shape):
    a = _logits(shape, torch.float64, device)
    t = _index_target(shape, device)
    x = a * 2  # computed logits: mul saves no output, so overwriting x is harmless here
    ptr = x.data_ptr()
    loss = pixelops.cross_entropy(x, t, label_smoothing=0.1, inplace_backward=True)
    ref_loss, ref_gx = _reference((a * 2).detach(), t, None, -100, "mean", 0.1, torch.tensor(1.0, dtype=torch.float64))
    torch.testing.assert_close(loss, ref_loss)
    (ga,) = torch.autograd.grad(loss, a)
    torch.testing.assert_close(ga, 2 * ref_gx)
    torch.testing.assert_close(x.detach(), ref_gx)  # the logits' memory now holds d loss / d x
    assert x.data_ptr() == ptr


@pytest.mark.parametrize("device", DEVICES)
def test_inplace_backward_tells_autograd(device):
    # exp saves its output for backward: after the logits are overwritten, that backward must raise.
    a = _logits((6, 8), torch.float32, device)
    x = a.exp()
    version = x._version
    loss = pixelops.cross_entropy(x, _index_target((6, 8), device), inplace_backward=True)
    assert x._version > version
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


@pytest.mark.parametrize("device", DEVICES)
def test_inplace_backward_on_expanded_logits(device):
    # one row of logits seen four times: a gradient written over them would put four rows into one; such logits
    # get a buffer of their own (before, base's gradient came out wrong and its values overwritten)
    base = _logits((1, 5), torch.float64, device)
    before = base.detach().clone()
    t = torch.tensor([0, 1, 2, 3], device=device)
    loss = pixelops.cross_entropy(base.expand(4, 5), t, inplace_backward=True)
    (g,) = torch.autograd.grad(loss, base)
    ref = before.clone().requires_grad_()
    (g_ref,) = torch.autograd.grad(F.cross_entropy(ref.expand(4, 5), t), ref)
    torch.testing.assert_close(g, g_ref)
    assert torch.equal(base.detach(), before)


def test_inplace_backward_on_a_leaf_raises():
    with pytest.raises(RuntimeError, match="leaf"):
        pixelops.cross_entropy(_logits((3, 4), torch.float32, "cpu"), torch.tensor([0, 1, 2]), inplace_backward=True)


def test_inplace_backward_without_grad_keeps_input():
    x = _logits((3, 4), torch.float32, "cpu", requires_grad=False)
    before = x.clone()
    pixelops.cross_entropy(x, torch.tensor([0, 1, 2]), inplace_backward=True)
    assert torch.equal(x, before)


# ---- numpy -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numpy_in_numpy_out(dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 7, 5)).astype(dtype)
    t = rng.integers(0, 7, (6, 5))
    t[0, 0] = -100
    w = (rng.random(7) + 0.5).astype(dtype)
    q = rng.random((6, 7, 5)).astype(dtype)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=2e-5, atol=2e-6)
    for reduction, eps in [("mean", 0.0), ("none", 0.2), ("sum", 0.1)]:
        out = pixelops.cross_entropy(x[:, :, ::-1], t, w, reduction=reduction, label_smoothing=eps)
        ref = F.cross_entropy(torch.from_numpy(x[:, :, ::-1].copy()).double(), torch.from_numpy(t),
                              torch.from_numpy(w).double(), reduction=reduction, label_smoothing=eps).numpy()
        assert isinstance(out, np.ndarray) and out.dtype == dtype and out.shape == ref.shape
        np.testing.assert_allclose(out, ref, **tol)
        out = pixelops.cross_entropy(x, q, reduction=reduction, label_smoothing=eps)
        ref = F.cross_entropy(torch.from_numpy(x).double(), torch.from_numpy(q).double(), reduction=reduction,
                              label_smoothing=eps).numpy()
        np.testing.assert_allclose(out, ref, **tol)


def test_numpy_bad_target_raises():
    with pytest.raises(IndexError, match="target 9 is out of bounds"):
        pixelops.cross_entropy(np.zeros((2, 3), np.float32) + np.arange(3, dtype=np.float32), np.array([0, 9]))
    with pytest.raises(ValueError, match="inplace_backward"):
        pixelops.cross_entropy(np.ones((2, 3)), np.array([0, 1]), inplace_backward=True)


# ---- torch.compile and the custom op ---------------------------------------------------------------------------

def test_opcheck_custom_op():
    from pixelops._torch.cross_entropy import cross_entropy_op

    x = torch.randn(4, 5, 3, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, 5, (4, 3))
    w = torch.rand(5, dtype=torch.float64)
    for args in [(x, t, None, -100, 1, 0.0, True), (x, t, w, 2, 0, 0.1, True), (x.detach(), t, w, -100, 2, 0.0, False),
                 (x, torch.softmax(torch.randn(4, 5, 3, dtype=torch.float64), 1), w, -100, 1, 0.2, True)]:
        torch.library.opcheck(cross_entropy_op, args, test_utils=("test_schema", "test_faketensor",
                                                                  "test_aot_dispatch_dynamic"))


def test_torch_compile_fullgraph():
    def loss_fn(x, t, w):
        return pixelops.cross_entropy(x * 1.5, t, w, label_smoothing=0.1)

    compiled = torch.compile(loss_fn, fullgraph=True, backend="aot_eager")
    x = _logits((8, 12, 3), torch.float32, "cpu")
    t = _index_target((8, 12, 3), "cpu")
    w = _weight(12, torch.float32, "cpu")
    loss = compiled(x, t, w)
    (gx,) = torch.autograd.grad(loss, x)
    ref = F.cross_entropy(x.detach().double() * 1.5, t, w.double(), label_smoothing=0.1)
    xr = x.detach().double().requires_grad_()
    (gref,) = torch.autograd.grad(F.cross_entropy(xr * 1.5, t, w.double(), label_smoothing=0.1), xr)
    torch.testing.assert_close(loss.double(), ref, **F32_TOL)
    torch.testing.assert_close(gx.double(), gref, **F32_TOL)


# ---- 64-bit indexing ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("channel_stride", [False, True])
def test_offsets_beyond_int32(channel_stride):
    # Two rows 2^31 elements apart in one storage (virtual memory: only the touched pages become real).
    C = 7
    try:
        storage = torch.empty((1 << 31) + 64, dtype=torch.float32)
    except RuntimeError:
        pytest.skip("cannot reserve 8 GiB of virtual memory here")
    vals = torch.randn(2, C)
    if channel_stride:  # (2, C) with the classes 2^31 / C... apart: channel offsets overflow int32
        step = ((1 << 31) + C) // (C - 1)
        x = storage.as_strided((2, C), (1, step))
    else:
        x = storage.as_strided((2, C), (1 << 31, 1))
    x.copy_(vals)
    x.requires_grad_()
    t = torch.tensor([3, 5])
    loss = pixelops.cross_entropy(x, t, reduction="sum")
    (g,) = torch.autograd.grad(loss, x)
    ref_loss, ref_g = _reference(vals, t, None, -100, "sum", 0.0, torch.tensor(1.0, dtype=torch.float64))
    torch.testing.assert_close(loss.double(), ref_loss, **F32_TOL)
    torch.testing.assert_close(g.double(), ref_g, **F32_TOL)


# ---- bad input -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bad", [5, -1, -7, 1 << 40])
def test_target_out_of_range(device, bad):
    x = _logits((4, 5, 2), torch.float32, device)
    t = torch.tensor([[0, 1], [2, bad], [3, 4], [-100, 0]], device=device)
    with pytest.raises(IndexError, match=f"target {bad} is out of bounds.*\\[0, 5\\)"):
        pixelops.cross_entropy(x, t)
    with pytest.raises(IndexError, match="out of bounds"):
        pixelops.cross_entropy(x.detach(), t, reduction="none")


def test_ignore_index_in_range_is_not_an_error_and_negative_targets_are():
    x = _logits((3, 4), torch.float64, "cpu")
    _check(x, torch.tensor([2, 2, 0]), None, 2, "mean", 0.0)
    with pytest.raises(IndexError, match="target -100"):
        pixelops.cross_entropy(x, torch.tensor([-100, 1, 0]), ignore_index=2)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(reduction="avg"), ValueError, "'reduction' must be 'none', 'mean' or 'sum', got 'avg'"),
    (dict(reduction=None), TypeError, "'reduction'"),  # (a wrong type: TypeError, as the README's rule)
    (dict(label_smoothing=1.5), ValueError, "'label_smoothing' must be between 0.0 and 1.0"),
    (dict(label_smoothing=-0.1), ValueError, "'label_smoothing'"),
    (dict(label_smoothing="x"), TypeError, "'label_smoothing' must be a number"),
    (dict(ignore_index=1.5), TypeError, "'ignore_index' must be an integer"),
    (dict(weight=torch.ones(4)), ValueError, "'weight' must have shape \\(5,\\)"),
    (dict(weight=torch.ones(5, dtype=torch.float64)), TypeError, "'weight' must have input's dtype float32"),
    (dict(weight=torch.ones(5, 1)), ValueError, "'weight' must have shape"),
    (dict(weight=[1.0] * 5), TypeError, "'weight' must be a numpy array or a torch tensor"),
])
def test_bad_options(kwargs, error, match):
    x = _logits((3, 5), torch.float32, "cpu")
    pixelops.cross_entropy(x, torch.tensor([0, 1, 2]))  # a good call first: its checks are kept, not reused here
    with pytest.raises(error, match=match):
        pixelops.cross_entropy(x, torch.tensor([0, 1, 2]), **kwargs)


@pytest.mark.parametrize("target, error, match", [
    (torch.tensor([0, 1]), ValueError, "class-index 'target' must have shape \\(3, 4\\).*got \\(2,\\)"),
    (torch.zeros(3, 5, dtype=torch.int64), ValueError, "must have shape \\(3, 4\\)"),
    (torch.zeros(3, 4, dtype=torch.int32), TypeError, "'target' must hold class indices \\(int64 or uint8\\).*int32"),
    (torch.zeros(3, 4, dtype=torch.bool), TypeError, "got dtype bool"),
    (torch.rand(3, 5, 4).to(torch.float8_e5m2), TypeError,
     "class-probability 'target' must have dtype float16, bfloat16, float32 or float64.*got float8_e5m2"),
    (torch.zeros(3, 5, 4, dtype=torch.int64), TypeError,  # torch: probabilities by their shape, refused by dtype
     "'target' of input's shape \\(3, 5, 4\\) holds class probabilities, which must be floating.*int64"),
    (torch.zeros(3, 5, 4, dtype=torch.int32), TypeError, "holds class probabilities, which must be floating.*int32"),
    (torch.rand(3, 5), ValueError, "class-probability 'target' must have input's shape \\(3, 5, 4\\)"),
    (np.zeros((3, 4), np.int64), TypeError, "must both be numpy arrays or both torch tensors"),
    ([0, 1, 2], TypeError, "'target' must be a numpy array or a torch tensor, got list"),
])
def test_bad_targets(target, error, match):
    x = _logits((3, 5, 4), torch.float32, "cpu")
    pixelops.cross_entropy(x, torch.zeros(3, 4, dtype=torch.int64))  # a good call first (checks kept)
    with pytest.raises(error, match=match):
        pixelops.cross_entropy(x, target)


def test_bad_logits():
    with pytest.raises(ValueError, match="'input' must have shape \\(C\\), \\(N, C\\)"):
        pixelops.cross_entropy(torch.tensor(1.0), torch.tensor(0))
    with pytest.raises(ValueError, match="'input' has no classes"):
        pixelops.cross_entropy(torch.randn(3, 0), torch.zeros(3, dtype=torch.int64))
    with pytest.raises(TypeError, match="'input' must have dtype float32 or float64 on cpu, got int64"):
        pixelops.cross_entropy(torch.ones(3, 4, dtype=torch.int64), torch.zeros(3, dtype=torch.int64))
    with pytest.raises(TypeError, match="'input'.*float16"):
        pixelops.cross_entropy(torch.ones(3, 4, dtype=torch.float16), torch.zeros(3, dtype=torch.int64))
    with pytest.raises(TypeError, match="'input' must be a numpy array or a torch tensor"):
        pixelops.cross_entropy([[1.0, 2.0]], torch.zeros(1, dtype=torch.int64))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(6, 9), (3, 12, 4, 5)])
def test_gradient_with_respect_to_probability_targets(device, shape):
    # PyTorch differentiates through soft targets too (e.g. distillation with a learned teacher).
    for reduction, eps, weighted, x_grad in itertools.product(["none", "mean", "sum"], [0.0, 0.3], [False, True],
                                                              [True, False]):
        x = _logits(shape, torch.float64, device, "transposed" if weighted else "contiguous", requires_grad=x_grad)
        q = _prob_target(shape, torch.float64, device).requires_grad_()
        w = _weight(_classes(shape), torch.float64, device) if weighted else None
        loss = pixelops.cross_entropy(x, q, w, reduction=reduction, label_smoothing=eps)
        g = torch.randn(loss.shape, dtype=torch.float64, device=device)
        inputs = (x, q) if x_grad else (q,)
        got = torch.autograd.grad(loss, inputs, g)
        xr = x.detach().requires_grad_(x_grad)
        qr = q.detach().requires_grad_()
        ref_loss = F.cross_entropy(xr, qr, w, reduction=reduction, label_smoothing=eps)
        ref = torch.autograd.grad(ref_loss, (xr, qr) if x_grad else (qr,), g)
        torch.testing.assert_close(loss, ref_loss)
        for a, b in zip(got, ref):
            torch.testing.assert_close(a, b)


def test_gradcheck_probability_targets():
    x = torch.randn(4, 5, 3, dtype=torch.float64, requires_grad=True)
    q = torch.softmax(torch.randn(4, 5, 3, dtype=torch.float64), 1).requires_grad_()
    w = torch.rand(5, dtype=torch.float64) + 0.5
    assert torch.autograd.gradcheck(lambda x, q: pixelops.cross_entropy(x, q, w, label_smoothing=0.1), (x, q))
    assert torch.autograd.gradcheck(lambda x, q: pixelops.cross_entropy(x, q, reduction="none"), (x, q))


def test_probability_target_grad_refuses_inplace_backward_and_compile():
    a = _logits((3, 4), torch.float32, "cpu")
    q = torch.softmax(torch.randn(3, 4), 1).requires_grad_()
    with pytest.raises(ValueError, match="inplace_backward=True cannot be used"):
        pixelops.cross_entropy(a * 2, q, inplace_backward=True)
    compiled = torch.compile(lambda x, q: pixelops.cross_entropy(x, q), fullgraph=True, backend="eager")
    with pytest.raises(Exception, match="cannot require grad"):
        compiled(a, q)


# ---- class probabilities of another dtype than the logits ----------------------------------------------------
# torch promotes: the loss has torch.result_type(input, target), the gradients the dtypes of what they belong to.
# pixelops runs its one-dtype kernels in the logits' dtype on the target converted to it, and casts the loss.

MIXED = [(torch.float32, torch.float64), (torch.float32, torch.float16), (torch.float32, torch.bfloat16),
         (torch.float64, torch.float32), (torch.float64, torch.float16), (torch.float64, torch.bfloat16)]
# the rounding of a result stored in a 16-bit dtype (a target's gradient), against a float64 reference
ROUNDED_TOL = {torch.float16: dict(rtol=2e-3, atol=1e-5), torch.bfloat16: dict(rtol=1e-2, atol=1e-4)}


def _mixed_tol(x_dtype, dtype):
    """Tolerance for a result of `dtype` computed from logits of x_dtype: float32 work (as torch's log_softmax of
    float32 logits) is float32-exact at best, whatever dtype the result is stored in."""
    if dtype in ROUNDED_TOL:
        return ROUNDED_TOL[dtype]
    return F32_TOL if torch.float32 in (x_dtype, dtype) else {}


def _check_mixed(x, q, weight=None, reduction="mean", eps=0.0):
    """pixelops against F.cross_entropy in float64 on the same values: the loss's value and dtype (torch's own
    for this pair), and the gradients of x and of q (where they require grad) in their own dtypes."""
    loss = pixelops.cross_entropy(x, q, weight, reduction=reduction, label_smoothing=eps)
    with torch.no_grad():
        torch_dtype = F.cross_entropy(x, q, weight, reduction=reduction, label_smoothing=eps).dtype
    assert loss.dtype == torch_dtype == torch.result_type(x, q) and loss.device == x.device
    grad_out = torch.randn(loss.shape, dtype=torch.float64, device=x.device).to(loss.dtype)
    wanted = [t for t in (x, q) if t.requires_grad]
    grads = torch.autograd.grad(loss, wanted, grad_out)

    xr = x.detach().double().cpu().requires_grad_(x.requires_grad)
    qr = q.detach().double().cpu().requires_grad_(q.requires_grad)
    ref = F.cross_entropy(xr, qr, None if weight is None else weight.double().cpu(), reduction=reduction,
                          label_smoothing=eps)
    refs = torch.autograd.grad(ref, [t for t in (xr, qr) if t.requires_grad], grad_out.double().cpu())
    assert loss.shape == ref.shape
    torch.testing.assert_close(loss.double().cpu(), ref, equal_nan=True, **_mixed_tol(x.dtype, loss.dtype))
    for t, g, r in zip(wanted, grads, refs):
        assert g.dtype == t.dtype and g.shape == t.shape and g.device == t.device
        torch.testing.assert_close(g.double().cpu(), r, **_mixed_tol(x.dtype, t.dtype))
    return loss


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("x_dtype, q_dtype", MIXED)
@pytest.mark.parametrize("shape", [(7,), (37, 11), (3, 13, 5, 7)])
def test_probability_targets_of_another_dtype(device, x_dtype, q_dtype, shape):
    C = _classes(shape)
    for weighted, reduction, eps, grads in itertools.product(
            [False, True], ["none", "mean", "sum"], [0.0, 0.3], ["x", "q", "both"]):
        x = _logits(shape, x_dtype, device, requires_grad=grads != "q")
        q = _prob_target(shape, q_dtype, device).requires_grad_(grads != "x")
        w = _weight(C, x_dtype, device) if weighted else None
        _check_mixed(x, q, w, reduction, eps)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("x_dtype, q_dtype", [(torch.float32, torch.float64), (torch.float64, torch.float16)])
@pytest.mark.parametrize("layout", ["transposed", "sliced", "channels_last"])
def test_probability_targets_of_another_dtype_strided(device, x_dtype, q_dtype, layout):
    # the converted target keeps a strided target's layout (or is made dense): the kernel reads either
    shape = (4, 9, 3, 5)
    x = _logits(shape, x_dtype, device, layout)
    q = _layout(_prob_target(shape, q_dtype, device), layout).requires_grad_()
    _check_mixed(x, q, _weight(9, x_dtype, device), "mean", 0.1)


@pytest.mark.parametrize("device", DEVICES)
def test_probability_targets_of_another_dtype_empty_batch(device):
    for reduction in ("mean", "sum", "none"):
        x = torch.randn(0, 5, 3, dtype=torch.float32, device=device, requires_grad=True)
        q = torch.zeros(0, 5, 3, dtype=torch.float64, device=device, requires_grad=True)
        loss = pixelops.cross_entropy(x, q, reduction=reduction)
        ref = F.cross_entropy(x.detach(), q.detach(), reduction=reduction)
        assert loss.dtype == ref.dtype == torch.float64
        torch.testing.assert_close(loss, ref, equal_nan=True)  # NaN for the mean, as torch's
        gx, gq = torch.autograd.grad(loss, (x, q), torch.full_like(loss, 2.0))
        assert (gx.shape, gx.dtype, gq.shape, gq.dtype) == (x.shape, x.dtype, q.shape, q.dtype)


def test_probability_targets_of_another_dtype_inplace_backward():
    # The kernel runs in the logits' dtype, so the gradient it writes fits the logits' own memory: mixed dtypes
    # take inplace_backward=True as one dtype does (the float64 loss's incoming gradient is cast to float32).
    a = _logits((9, 33), torch.float32, "cpu")
    q = _prob_target((9, 33), torch.float64, "cpu")
    x = a * 2
    ptr = x.data_ptr()
    loss = pixelops.cross_entropy(x, q, label_smoothing=0.1, inplace_backward=True)
    assert loss.dtype == torch.float64
    xr = (a * 2).detach().double().requires_grad_()
    ref = F.cross_entropy(xr, q, label_smoothing=0.1)
    (ref_gx,) = torch.autograd.grad(ref, xr)
    torch.testing.assert_close(loss, ref, **F32_TOL)
    (ga,) = torch.autograd.grad(loss, a)
    assert ga.dtype == torch.float32
    torch.testing.assert_close(ga.double(), 2 * ref_gx, **F32_TOL)
    torch.testing.assert_close(x.detach().double(), ref_gx, **F32_TOL)  # the logits' memory holds d loss / d x
    assert x.data_ptr() == ptr
    # a target that requires grad still refuses it, whatever its dtype (its gradient needs the logits)
    with pytest.raises(ValueError, match="inplace_backward=True cannot be used"):
        pixelops.cross_entropy(a * 2, q.float().half().requires_grad_(), inplace_backward=True)


def test_gradcheck_probability_targets_of_another_dtype():
    # float64 logits, float32 probabilities (converted exactly): the whole computation is float64's
    x = torch.randn(4, 5, 3, dtype=torch.float64, requires_grad=True)
    q = torch.softmax(torch.randn(4, 5, 3), 1)
    w = torch.rand(5, dtype=torch.float64) + 0.5
    for reduction in ("mean", "sum", "none"):
        assert torch.autograd.gradcheck(
            lambda x: pixelops.cross_entropy(x, q, w, reduction=reduction, label_smoothing=0.2), (x,))


def test_probability_targets_of_another_dtype_under_cpu_autocast():
    # autocast runs cross-entropy in float32 but leaves float64 alone: torch then promotes the float32 logits
    # with float64 probabilities to a float64 loss (where pixelops refused the float64 target), and half
    # probabilities with the logits to float32.
    x = _logits((6, 7), torch.float32, "cpu")
    for logits, q in [(x, _prob_target((6, 7), torch.float64, "cpu")),
                      (x.bfloat16(), _prob_target((6, 7), torch.float64, "cpu")),
                      (x.bfloat16(), _prob_target((6, 7), torch.float16, "cpu").requires_grad_())]:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = pixelops.cross_entropy(logits, q, label_smoothing=0.1)
            ref = F.cross_entropy(logits, q, label_smoothing=0.1)
        assert loss.dtype == ref.dtype
        torch.testing.assert_close(loss, ref, **F32_TOL)
        got = torch.autograd.grad(loss, (x, q) if q.requires_grad else (x,))
        want = torch.autograd.grad(ref, (x, q) if q.requires_grad else (x,))
        for g, r in zip(got, want):
            assert g.dtype == r.dtype
            torch.testing.assert_close(g, r, **(ROUNDED_TOL.get(g.dtype) or F32_TOL))


def test_probability_targets_of_another_dtype_under_compile_and_torch_func():
    x = _logits((8, 12, 3), torch.float32, "cpu")
    q = _prob_target((8, 12, 3), torch.float64, "cpu")
    w = _weight(12, torch.float32, "cpu")
    xr = x.detach().double().requires_grad_()
    ref = F.cross_entropy(xr * 1.5, q, w.double(), label_smoothing=0.1)
    (gref,) = torch.autograd.grad(ref, xr)

    def loss_fn(x, q, w):
        return pixelops.cross_entropy(x * 1.5, q, w, label_smoothing=0.1)

    # eager, then compiled whole
    for fn in (loss_fn, torch.compile(loss_fn, fullgraph=True, backend="aot_eager")):
        loss = fn(x, q, w)
        (gx,) = torch.autograd.grad(loss, x)
        assert loss.dtype == torch.float64 and gx.dtype == torch.float32
        torch.testing.assert_close(loss, ref, **F32_TOL)
        torch.testing.assert_close(gx.double(), gref, **F32_TOL)

    loss_of = lambda x: pixelops.cross_entropy(x * 1.5, q, w, label_smoothing=0.1)  # noqa: E731
    gx, loss = torch.func.grad_and_value(loss_of)(x.detach())
    assert loss.dtype == torch.float64 and gx.dtype == torch.float32
    torch.testing.assert_close(loss, ref.detach(), **F32_TOL)
    torch.testing.assert_close(gx.double(), gref, **F32_TOL)
    # per-sample losses and gradients under vmap (entries of 12 classes, unbatched): each entry's as a call
    x, q = x[:, :, 0], q[:, :, 0]
    per_entry = torch.func.vmap(torch.func.grad_and_value(
        lambda z, p: pixelops.cross_entropy(z, p, w, label_smoothing=0.1)))(x.detach(), q)
    for i in (0, 5):
        zr = x[i].detach().double().requires_grad_()
        one = F.cross_entropy(zr, q[i], w.double(), label_smoothing=0.1)
        torch.testing.assert_close(per_entry[1][i], one.detach(), **F32_TOL)
        torch.testing.assert_close(per_entry[0][i].double(), torch.autograd.grad(one, zr)[0], **F32_TOL)
    assert per_entry[1].dtype == torch.float64 and per_entry[0].dtype == torch.float32


@pytest.mark.parametrize("x_dtype, q_dtype", [(np.float32, np.float64), (np.float32, np.float16),
                                              (np.float64, np.float32), (np.float64, np.float16)])
def test_numpy_probability_targets_of_another_dtype(x_dtype, q_dtype):
    # numpy in, numpy out, in the dtype torch gives the same arrays (numpy's promotion agrees on these pairs)
    rng = np.random.default_rng(3)
    x = (3 * rng.standard_normal((5, 9, 7))).astype(x_dtype)
    q = rng.random((5, 9, 7))
    q = (q / q.sum(1, keepdims=True)).astype(q_dtype)
    w = (rng.random(9) + 0.5).astype(x_dtype)
    for reduction, eps in [("mean", 0.0), ("none", 0.2), ("sum", 0.1)]:
        out = pixelops.cross_entropy(x[:, :, ::-1], q[:, :, ::-1], w, reduction=reduction, label_smoothing=eps)
        tx, tq, tw = (torch.from_numpy(a.copy()) for a in (x[:, :, ::-1], q[:, :, ::-1], w))
        want_dtype = F.cross_entropy(tx, tq, tw, reduction=reduction, label_smoothing=eps).numpy().dtype
        ref = F.cross_entropy(tx.double(), tq.double(), tw.double(), reduction=reduction,
                              label_smoothing=eps).numpy()
        assert isinstance(out, np.ndarray) and out.dtype == want_dtype == np.result_type(x_dtype, q_dtype)
        assert out.shape == ref.shape
        tol = dict(rtol=1e-12, atol=1e-12) if x_dtype == np.float64 else dict(rtol=2e-5, atol=2e-6)
        np.testing.assert_allclose(out, ref, **tol)


def test_numpy_probability_targets_torch_has_no_dtype_for():
    # numpy's long double (float128 here): torch.from_numpy refuses it, and there is no kernel dtype to cast to
    if np.dtype(np.longdouble).itemsize == 8:
        pytest.skip("long double is float64 on this platform")
    q = np.full((2, 3), 1 / 3, np.longdouble)
    with pytest.raises(TypeError, match=f"class-probability 'target' must have dtype float16, float32 or float64, "
                                        f"got {q.dtype.name}"):
        pixelops.cross_entropy(np.zeros((2, 3), np.float32), q)


def test_probability_target_dtype_is_part_of_the_cached_signature():
    # The eager checks are kept per call signature: a float64 target's "ok" must not pass a target of the same
    # shape but a dtype torch refuses (float8: no promotion; integers of the logits' shape: not probabilities).
    x = _logits((3, 5, 4), torch.float32, "cpu")
    q = _prob_target((3, 5, 4), torch.float64, "cpu")
    pixelops.cross_entropy(x, q)
    pixelops.cross_entropy(x, q)  # (the kept answer)
    for bad, match in [(q.to(torch.float8_e4m3fn), "must have dtype float16, bfloat16, float32 or float64"),
                       (torch.zeros(3, 5, 4, dtype=torch.int64), "must be floating"),
                       (torch.zeros(3, 5, 4, dtype=torch.uint8), "must be floating")]:
        with pytest.raises(Exception):  # torch refuses each
            F.cross_entropy(x, bad)
        for _ in range(2):  # (a refusal is not kept as an answer either)
            with pytest.raises(TypeError, match=match):
                pixelops.cross_entropy(x, bad)
    assert pixelops.cross_entropy(x, q.half()).dtype == torch.float32  # good calls still pass


# ---- CUDA only -----------------------------------------------------------------------------------------------

@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(64, 1000), (8, 32000), (4, 256, 7, 9), (33, 5)])
def test_cuda_half_types_accumulate_in_float32(dtype, shape):
    # Compared with PyTorch run on the same half logits in float64; the loss is computed in float32 and
    # returned in the logits' dtype, as F.cross_entropy does.
    tol = dict(rtol=2e-2, atol=2e-3) if dtype == torch.bfloat16 else dict(rtol=5e-3, atol=5e-4)
    for reduction, eps in [("mean", 0.0), ("none", 0.1), ("sum", 0.0)]:
        x = _logits(shape, dtype, "cuda")
        _check(x, _index_target(shape, "cuda"), _weight(_classes(shape), dtype, "cuda"), -100, reduction, eps, tol)
        x = _logits(shape, dtype, "cuda")
        _check(x, _prob_target(shape, dtype, "cuda"), None, -100, reduction, eps, tol)


@pytest.mark.cuda
@pytest.mark.parametrize("x_dtype, q_dtype", [(torch.float16, torch.float32), (torch.bfloat16, torch.float32),
                                              (torch.float16, torch.float64), (torch.bfloat16, torch.float16)])
@pytest.mark.parametrize("shape", [(64, 1000), (4, 256, 7, 9), (33, 5)])
def test_cuda_half_logits_with_probability_targets_of_another_dtype(x_dtype, q_dtype, shape):
    # The kernel runs on the logits' half dtype (with float32 arithmetic) and the probabilities rounded to it:
    # the loss, promoted to float32 or float64 as torch's, is as exact as a half loss (torch's log_softmax is
    # rounded to the half dtype too). Half tolerances for the loss and the logits' gradient.
    tol = dict(rtol=2e-2, atol=2e-3) if torch.bfloat16 in (x_dtype, q_dtype) else dict(rtol=5e-3, atol=5e-4)
    for reduction, eps, weighted in [("mean", 0.0, True), ("none", 0.1, False), ("sum", 0.0, True)]:
        x = _logits(shape, x_dtype, "cuda")
        q = _prob_target(shape, q_dtype, "cuda").requires_grad_()
        w = _weight(_classes(shape), x_dtype, "cuda") if weighted else None
        loss = pixelops.cross_entropy(x, q, w, reduction=reduction, label_smoothing=eps)
        assert loss.dtype == torch.result_type(x, q)
        g = torch.randn(loss.shape, dtype=torch.float64, device="cuda").to(loss.dtype)
        gx, gq = torch.autograd.grad(loss, (x, q), g)
        xr, qr = x.detach().double().requires_grad_(), q.detach().double().requires_grad_()
        ref = F.cross_entropy(xr, qr, None if w is None else w.double(), reduction=reduction, label_smoothing=eps)
        gxr, gqr = torch.autograd.grad(ref, (xr, qr), g.double())
        assert gx.dtype == x_dtype and gq.dtype == q_dtype
        torch.testing.assert_close(loss.double(), ref, **tol)
        torch.testing.assert_close(gx.double(), gxr, **tol)
        torch.testing.assert_close(gq.double(), gqr, **tol)


@pytest.mark.cuda
def test_cuda_bad_target_raises_without_device_assert_and_context_survives():
    x = _logits((64, 10, 9), torch.float32, "cuda")
    t = _index_target((64, 10, 9), "cuda")
    t[17, 3] = 10
    with pytest.raises(IndexError, match="target 10 is out of bounds"):
        pixelops.cross_entropy(x, t)
    t[17, 3] = 1
    _check(x, t)  # the CUDA context is still usable


@pytest.mark.cuda
def test_cuda_graph_capture():
    x = _logits((256, 1000), torch.float32, "cuda", requires_grad=False)
    t = _index_target((256, 1000), "cuda")
    pixelops.cross_entropy(x, t)  # warm up outside the capture
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        loss = pixelops.cross_entropy(x, t)
    x.copy_(torch.randn_like(x))
    g.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(loss.double(), F.cross_entropy(x.double(), t), **F32_TOL)


@pytest.mark.cuda
def test_cuda_current_stream():
    # On a side stream kept busy, x gets its values and then the loss: a kernel launched on any other stream
    # would run during the sleep and read the NaNs x held before the copy.
    src = _logits((512, 3000), torch.float32, "cuda")
    t = _index_target((512, 3000), "cuda")
    x = torch.full_like(src, float("nan")).requires_grad_()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        torch.cuda._sleep(20_000_000)
        with torch.no_grad():
            x.copy_(src)
        loss = pixelops.cross_entropy(x, t, reduction="none")
        (g,) = torch.autograd.grad(loss.sum(), x)
    s.synchronize()
    ref_loss, ref_g = _reference(x, t, None, -100, "none", 0.0, torch.ones(512, device="cuda", dtype=torch.float64))
    torch.testing.assert_close(loss.double(), ref_loss, **F32_TOL)
    torch.testing.assert_close(g.double(), ref_g, **F32_TOL)


@pytest.mark.cuda
@pytest.mark.parametrize("shape", [(8192, 1000), (64, 256, 28, 28)])
def test_cuda_peak_memory_at_most_logits_plus_a_tenth(shape):
    x = _logits(shape, torch.float32, "cuda")
    t = _index_target(shape, "cuda")
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    (g,) = torch.autograd.grad(pixelops.cross_entropy(x, t), x)
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - base
    assert extra <= 1.1 * x.numel() * x.element_size()
    del g


@pytest.mark.cuda
def test_cuda_more_than_2_31_elements():
    N, C = 2200, 1 << 20  # 2.3e9 logits: 9.2 GB in float32
    x = torch.empty(N, C, device="cuda").normal_().requires_grad_()
    t = torch.randint(0, C, (N,), device="cuda")
    loss = pixelops.cross_entropy(x, t)
    (g,) = torch.autograd.grad(loss, x)
    with torch.no_grad():
        ref = F.cross_entropy(x[-8:].double(), t[-8:], reduction="sum")
        torch.testing.assert_close((pixelops.cross_entropy(x[-8:], t[-8:], reduction="sum")).double(), ref, **F32_TOL)
        rows = torch.arange(N - 3, N, device="cuda")
        p = torch.softmax(x[rows].double(), 1)
        p[torch.arange(3), t[rows]] -= 1
        torch.testing.assert_close(g[rows].double(), p / N, rtol=1e-4, atol=1e-12)
    assert torch.isfinite(loss)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(6, 40), (3, 40, 5, 2)])
def test_masked_logits_minus_inf(device, shape):
    # Classes masked with -inf (class 0 among them) are legal as long as no target points at one.
    for eps, probs in [(0.0, False), (0.2, False), (0.0, True)]:
        x = _logits(shape, torch.float32, device, requires_grad=False)
        x[:, 0] = -float("inf")
        x[:, 7] = -float("inf")
        t = _index_target(shape, device, ignored=0.0).clamp(min=8)
        if probs:
            t = torch.nn.functional.one_hot(t, shape[1]).movedim(-1, 1).to(x.dtype) * 0.5 + 0.5 / shape[1]
            t[:, 0] = 0
            t[:, 7] = 0
            t = t / t.sum(1, keepdim=True)
        x.requires_grad_()
        for reduction in ("none", "mean"):
            loss = pixelops.cross_entropy(x, t, reduction=reduction, label_smoothing=eps)
            ref = F.cross_entropy(x.detach().double(), t.double() if probs else t, reduction=reduction,
                                  label_smoothing=eps)
            torch.testing.assert_close(loss.double(), ref, equal_nan=True, **F32_TOL)
            if eps == 0.0 and not probs:
                _check(x, t, None, -100, reduction, eps)


def test_bench_cases_check_out():
    # The benchmark rows' own correctness check (pixelops/bench/cross_entropy.py), run once without timing.
    from pixelops.bench.cross_entropy import cases

    rows = cases("cpu")
    assert {c.name for c in rows} >= {"imagenet fwd+bwd", "vocab32k fwd+bwd", "pixel256 fwd+bwd"}
    for case in rows:
        args = case.setup()
        assert case.error(args) < 1e-5, case.name
        assert case.bytes and case.ceiling == "copy"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(6, 3), (2, 3, 5, 7)])  # rows, and the tile path of a spatial input
def test_infinite_weight_of_a_class_no_target_names(device, shape):
    # inverse class frequencies give an absent class weight 1/0 = inf: without label smoothing that weight
    # never enters the loss (torch's is finite), where 0 * inf had turned the loss and the gradient NaN
    x = torch.randn(*shape, dtype=torch.float64, device=device, requires_grad=True)
    target = torch.randint(0, 2, shape[:1] + shape[2:], device=device) * 2  # classes 0 and 2 only
    weight = torch.tensor([1.0, float("inf"), 2.0], dtype=torch.float64, device=device)
    for reduction in ("mean", "sum", "none"):
        ours = pixelops.cross_entropy(x, target, weight, reduction=reduction)
        ref = F.cross_entropy(x, target, weight, reduction=reduction)
        g = torch.randn_like(ref)
        torch.testing.assert_close(ours, ref)
        torch.testing.assert_close(torch.autograd.grad(ours, x, g)[0], torch.autograd.grad(ref, x, g)[0])


def test_refused_where_a_result_would_be_silently_wrong():
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0, 1, 2, 1])
    probs = torch.softmax(torch.randn(4, 3, dtype=torch.float64), 1)
    # class weights that require grad: pixelops computes no gradient for them (torch: for probabilities)
    w = torch.rand(3, dtype=torch.float64, requires_grad=True)
    for target in (t, probs):
        with pytest.raises(RuntimeError, match="'weight' requires grad"):
            pixelops.cross_entropy(x, target, w)
    with torch.no_grad():
        torch.testing.assert_close(pixelops.cross_entropy(x, t, w), F.cross_entropy(x, t, w))
    # a second derivative (create_graph=True): the gradient would come back a constant
    (g,) = torch.autograd.grad(pixelops.cross_entropy(x * 1, t), x, create_graph=False)
    with pytest.raises(RuntimeError, match="second derivatives"):
        torch.autograd.grad(pixelops.cross_entropy(x * 1, t), x, create_graph=True)
    # inplace_backward on a view of a leaf would write the gradient over the parameter itself
    for view in (x[:], x.view(4, 3), x.t().t()):
        with pytest.raises(RuntimeError, match="leaf"):
            pixelops.cross_entropy(view, t, inplace_backward=True)
    assert not torch.equal(x, g)  # still the logits


def test_arguments_torch_refuses():
    x, t = torch.randn(4, 3), torch.tensor([0, 1, 2, 1])
    with pytest.raises(TypeError, match="'ignore_index' must be an integer"):
        pixelops.cross_entropy(x, t, ignore_index=True)  # (not class 1)
    with pytest.raises(ValueError, match="'ignore_index' is not supported with class-probability"):
        pixelops.cross_entropy(x, torch.softmax(torch.randn(4, 3), 1), ignore_index=1)


def test_argument_types_and_ranges_torch_refuses_or_the_kernels_cannot_hold():
    x, t = torch.randn(4, 3), torch.tensor([0, 1, 2, 1])
    for bad in ("0.1", True):  # float() read both
        with pytest.raises(TypeError, match="'label_smoothing' must be a number"):
            pixelops.cross_entropy(x, t, label_smoothing=bad)
    with pytest.raises(ValueError, match="'ignore_index' must fit in 64 bits"):  # (was pybind's TypeError)
        pixelops.cross_entropy(x, t, ignore_index=2 ** 63)
