"""pixelops.conv2d against torch.nn.functional.conv2d: every option forward and backward, layouts, dtypes,
numpy, gradcheck, torch.compile/opcheck, and bad input."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import pixelops
from _util import DEVICES, LAYOUTS, strided

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")

# (N, C, H, W), (Cout, kH, kW), kwargs: awkward sizes, every option of F.conv2d
CONFIGS = [
    ((2, 3, 7, 9), (4, 3, 3), dict(padding=1)),
    ((1, 1, 5, 5), (1, 1, 1), dict()),
    ((3, 5, 11, 6), (7, 2, 4), dict(stride=(2, 1), padding=(1, 2))),
    ((2, 4, 13, 10), (6, 3, 3), dict(stride=(2, 3), padding=2, dilation=(2, 1), groups=2)),
    ((2, 6, 9, 9), (6, 3, 3), dict(padding=1, groups=6)),                       # depthwise
    ((2, 4, 8, 7), (8, 5, 5), dict(padding="same", dilation=2, groups=2)),
    ((1, 3, 8, 8), (5, 2, 4), dict(padding="same")),                             # even kernel, asymmetric pad
    ((2, 3, 9, 8), (4, 3, 3), dict(padding="valid", stride=3)),
    ((2, 3, 6, 6), (4, 6, 6), dict()),                                           # kernel = input
    ((1, 2, 5, 4), (3, 3, 3), dict(padding=(4, 3), stride=2)),                    # padding larger than kernel
    ((0, 3, 8, 8), (4, 3, 3), dict(padding=1)),                                  # empty batch
    ((2, 80, 10, 11), (70, 3, 3), dict(padding=1)),                              # several GEMM tiles and k blocks
    ((1, 700, 5, 5), (9, 1, 1), dict()),                                         # k deeper than one block (640)
    ((1, 2, 5, 5), (700, 1, 1), dict()),                                         # the same in grad_input's scatter
    # more input than output channels: grad_input takes the flipped kernel (one stride phase), not the scatter
    ((2, 16, 7, 8), (8, 3, 3), dict(padding=1)),
    ((1, 12, 9, 9), (6, 3, 3), dict(padding=(3, 1), dilation=(2, 1))),
    # strided, with enough channels that the CPU's grad_input goes by stride phases (a stride-1 conv of grad_y
    # per phase, written into every stride-th row and column of grad_input) instead of the scatter
    ((2, 8, 21, 20), (64, 3, 3), dict(stride=2, padding=1)),
    ((2, 16, 19, 23), (128, 3, 3), dict(stride=(2, 3), padding=(1, 2), dilation=(1, 2), groups=2)),
    ((2, 8, 17, 16), (64, 1, 1), dict(stride=2)),                                # 3 of 4 phases get no tap
    ((1, 8, 16, 18), (64, 3, 3), dict(stride=2, padding=3)),                     # phases read grad_y from row 1
    ((2, 8, 15, 15), (64, 3, 3), dict(stride=2, dilation=2)),                    # every tap in one phase
]


def _data(x_shape, w_shape, groups, dtype, device, bias=True):
    gen = torch.Generator().manual_seed(hash((x_shape, w_shape)) % 2**31)
    cout, kh, kw = w_shape
    x = torch.randn(x_shape, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
    w = torch.randn((cout, x_shape[1] // groups, kh, kw), generator=gen, dtype=torch.float64).to(device, dtype)
    b = torch.randn(cout, generator=gen, dtype=torch.float64).to(device, dtype) if bias else None
    return x, w, b


def _reference(x, w, b, relu, **kw):
    y = F.conv2d(x, w, b, **kw)
    return torch.relu(y) if relu else y


def _compare(x, w, b, relu, kw, tol, ref_dtype=torch.float64):
    """Forward and all three gradients of pixelops against torch (computed in ref_dtype)."""
    leaves = [t.detach().requires_grad_() for t in (x, w) + ((b,) if b is not None else ())]
    y = pixelops.conv2d(leaves[0], leaves[1], leaves[2] if b is not None else None, **kw,
                        activation="relu" if relu else None)
    ref_leaves = [t.detach().to(ref_dtype).requires_grad_() for t in leaves]
    kw_ref = {k: v for k, v in kw.items() if k != "allow_tf32"}
    y_ref = _reference(ref_leaves[0], ref_leaves[1], ref_leaves[2] if b is not None else None, relu, **kw_ref)
    assert y.shape == y_ref.shape and y.dtype == x.dtype and y.device == x.device
    torch.testing.assert_close(y.to(ref_dtype), y_ref, **tol)
    g = torch.randn(y.shape, dtype=torch.float64).to(y.device, y.dtype)
    grads = torch.autograd.grad(y, leaves, g)
    grads_ref = torch.autograd.grad(y_ref, ref_leaves, g.to(ref_dtype))
    for name, a, r in zip(("input", "weight", "bias"), grads, grads_ref):
        assert a.shape == r.shape, name
        torch.testing.assert_close(a.to(ref_dtype), r, **tol, msg=lambda m: f"grad {name}: {m}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("x_shape,w_shape,kw", CONFIGS)
def test_matches_torch_float64(device, x_shape, w_shape, kw, relu):
    x, w, b = _data(x_shape, w_shape, kw.get("groups", 1), torch.float64, device)
    _compare(x, w, b, relu, kw, dict(rtol=1e-10, atol=1e-10))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("x_shape,w_shape,kw", CONFIGS[::2])
def test_matches_torch_float32(device, x_shape, w_shape, kw):
    x, w, b = _data(x_shape, w_shape, kw.get("groups", 1), torch.float32, device)
    # float32 sums in another order than the float64 reference: tolerance scales with the reduction length
    _compare(x, w, b, True, dict(kw, allow_tf32=False), dict(rtol=1e-4, atol=1e-4))


@pytest.mark.parametrize("device", DEVICES)
def test_without_bias(device):
    x, w, _ = _data((2, 3, 6, 7), (5, 3, 3), 1, torch.float64, device, bias=False)
    _compare(x, w, None, True, dict(padding=1), dict(rtol=1e-10, atol=1e-10))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", LAYOUTS[1:])
def test_any_strides(device, layout):
    x, w, b = _data((3, 4, 7, 6), (5, 3, 2), 1, torch.float64, device)
    xs, ws = strided(x, layout), strided(w, layout)
    assert not (xs.is_contiguous() and ws.is_contiguous()) or layout == "offset"
    _compare(xs, ws, strided(b, layout), False, dict(stride=(1, 2), padding=1), dict(rtol=1e-10, atol=1e-10))
    # channels_last input
    _compare(x.to(memory_format=torch.channels_last), w, b, True, dict(padding=1), dict(rtol=1e-10, atol=1e-10))


# Which gradients are wanted changes the kernels' plan (CUDA): with the weight gradient, grad_bias is one more
# column of its partial sums (the few-channel kernel's column of ones, the other kernels' row sums of grad_y)
# instead of a pass of its own; wanted alone, grad_bias has its own kernel. Each subset of (input, weight, bias),
# on few-channel layers with room for the bias column (2 x 9 = 18 and 7 x 9 = 63 taps) and without (16 x 1: the
# bias column would need 32), and on 8 x 9 = 72 (the GEMM).
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cin,k", [(2, 3), (7, 3), (16, 1), (8, 3)])
@pytest.mark.parametrize("wanted", [(1, 1, 1), (0, 1, 1), (0, 0, 1), (0, 1, 0), (1, 0, 1)])
def test_each_subset_of_gradients(device, cin, k, wanted):
    x, w, b = _data((3, cin, 9, 10), (6, k, k), 1, torch.float64, device)
    leaves = [t.detach().requires_grad_(bool(r)) for t, r in zip((x, w, b), wanted)]
    y = pixelops.conv2d(*leaves, padding=k // 2, activation="relu")
    ref_leaves = [t.detach().requires_grad_(bool(r)) for t, r in zip((x, w, b), wanted)]
    y_ref = torch.relu(F.conv2d(*ref_leaves, padding=k // 2))
    g = torch.randn(y.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(cin)).to(device)
    got = torch.autograd.grad(y, [t for t in leaves if t.requires_grad], g)
    ref = torch.autograd.grad(y_ref, [t for t in ref_leaves if t.requires_grad], g)
    assert len(got) == sum(wanted)
    for a, r in zip(got, ref):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-10)


# grad_bias on the CPU sums each grad_y row in blocks of 256 values, then whole vectors of 16, then one at a time:
# rows of 16 x 16 (one block), 17 x 19 = 323 (a block, four vectors, three values) and 3 x 5 (values alone), of
# a gradient far from zero mean, so that a value dropped or counted twice shows.
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("hw", [(16, 16), (17, 19), (3, 5)])
def test_grad_bias_sums_every_value(device, dtype, hw):
    x, w, b = _data((5, 2, *hw), (3, 1, 1), 1, dtype, device)
    b.requires_grad_()
    y = pixelops.conv2d(x, w, b)
    g = 3 + torch.rand(y.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(hw[0]))
    (gb,) = torch.autograd.grad(y, b, g.to(device, dtype))
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    torch.testing.assert_close(gb.double(), g.to(device).sum((0, 2, 3)), rtol=tol, atol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_gradient_with_zero_strides(device):
    # .sum() sends an expanded (stride 0) gradient back
    x, w, b = _data((2, 3, 5, 5), (4, 3, 3), 1, torch.float64, device)
    x.requires_grad_()
    pixelops.conv2d(x, w, b, padding=1, activation="relu").sum().backward()
    x2 = x.detach().requires_grad_()
    torch.relu(F.conv2d(x2, w, b, padding=1)).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-10, atol=1e-10)


def test_gradcheck_float64():
    x, w, b = _data((2, 4, 5, 6), (4, 3, 2), 2, torch.float64, "cpu")
    args = [t.requires_grad_() for t in (x, w, b)]
    assert torch.autograd.gradcheck(
        lambda x, w, b: pixelops.conv2d(x, w, b, stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2), args)
    # ReLU fused: keep the pre-activations away from the kink
    assert torch.autograd.gradcheck(lambda x, w, b: pixelops.conv2d(x, w, b + 0.05, padding=1, groups=2,
                                                                    activation="relu"), args)


def test_unbatched_and_numpy():
    x, w, b = _data((1, 3, 6, 7), (4, 3, 3), 1, torch.float32, "cpu")
    x = x[0]  # unbatched (C, H, W), as F.conv2d takes it
    torch.testing.assert_close(pixelops.conv2d(x, w, b, padding=1), F.conv2d(x, w, b, padding=1))
    y = pixelops.conv2d(x.numpy(), w.numpy(), b.numpy(), padding=1, activation="relu")
    assert isinstance(y, np.ndarray) and y.dtype == np.float32
    np.testing.assert_allclose(y, torch.relu(F.conv2d(x, w, b, padding=1)).numpy(), rtol=1e-5, atol=1e-5)
    y64 = pixelops.conv2d(x.double().numpy()[None], w.double().numpy(), stride=2)
    np.testing.assert_allclose(y64, F.conv2d(x.double()[None], w.double(), stride=2).numpy(), rtol=1e-12)
    # numpy views: reversed rows (negative strides), every other column
    xv = x.double().numpy()[None][:, :, ::-1, ::2]
    ref = F.conv2d(torch.from_numpy(xv.copy()), w.double(), padding=(1, 2), dilation=(1, 2)).numpy()
    np.testing.assert_allclose(pixelops.conv2d(xv, w.double().numpy(), padding=(1, 2), dilation=(1, 2)), ref,
                               rtol=1e-12, atol=1e-12)


def test_inputs_not_modified_and_no_grad_path():
    x, w, b = _data((2, 3, 6, 6), (4, 3, 3), 1, torch.float32, "cpu")
    copies = [t.clone() for t in (x, w, b)]
    with torch.no_grad():
        y = pixelops.conv2d(x.requires_grad_(), w, b, padding=1, activation="relu")
    assert not y.requires_grad
    for t, c in zip((x, w, b), copies):
        assert torch.equal(t, c)


# small tiles go through a buffer and store_tile; 8 channels of 8x8 are full tiles that the microkernel writes
@pytest.mark.parametrize("x_shape,w_shape", [((1, 2, 4, 4), (3, 3, 3)), ((1, 2, 8, 8), (8, 3, 3))])
def test_nan_propagates_through_relu(x_shape, w_shape):
    x, w, b = _data(x_shape, w_shape, 1, torch.float32, "cpu")
    x[0, 0, 1, 1] = float("nan")
    y = pixelops.conv2d(x, w, b, padding=1, activation="relu")
    ref = torch.relu(F.conv2d(x, w, b, padding=1))
    torch.testing.assert_close(y, ref, equal_nan=True)


def test_torch_compile_fullgraph_and_opcheck():
    x, w, b = _data((2, 4, 6, 6), (6, 3, 3), 2, torch.float32, "cpu")

    def f(x, w, b):
        return pixelops.conv2d(x, w, b, stride=2, padding=1, groups=2, activation="relu").square().sum()

    args = [t.clone().requires_grad_() for t in (x, w, b)]
    ref_args = [t.clone().requires_grad_() for t in (x, w, b)]
    torch.compile(f, fullgraph=True, backend="aot_eager")(*args).backward()
    (torch.relu(F.conv2d(ref_args[0], ref_args[1], ref_args[2], stride=2, padding=1, groups=2)).square().sum()
     .backward())
    for a, r in zip(args, ref_args):
        torch.testing.assert_close(a.grad, r.grad, rtol=1e-4, atol=1e-4)
    from pixelops._torch import conv2d as ops
    torch.library.opcheck(ops.conv2d_op, (x, w, b, [2, 1], [1, 1, 0, 0], [1, 1], 2, 9, True, False))
    torch.library.opcheck(ops.conv2d_op, (x.requires_grad_(), w.requires_grad_(), None, [1, 1], [0, 0, 0, 0],
                                          [1, 2], 2, 5, False, False))


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_half_types(dtype):
    x, w, b = _data((2, 8, 9, 10), (16, 3, 3), 1, dtype, "cuda")
    tol = dict(rtol=2e-2, atol=2e-2) if dtype == torch.float16 else dict(rtol=5e-2, atol=5e-2)
    _compare(x, w, b, True, dict(padding=1), tol, ref_dtype=torch.float32)


@pytest.mark.cuda
@pytest.mark.parametrize("allow_tf32", [None, True, False])
def test_cuda_tf32_switch(allow_tf32):
    x, w, b = _data((2, 32, 12, 12), (32, 3, 3), 1, torch.float32, "cuda")
    if allow_tf32 is False:
        _compare(x, w, b, False, dict(padding=1, allow_tf32=False), dict(rtol=1e-4, atol=1e-4))
        return
    # TF32 (None follows cudnn.allow_tf32, true by default) keeps 10 mantissa bits: single elements of a sum
    # of 288 products can be off by 1e-3 of the output's scale, so compare whole tensors, ||d|| / ||ref||.
    leaves = [t.detach().requires_grad_() for t in (x, w, b)]
    y = pixelops.conv2d(*leaves, padding=1, allow_tf32=allow_tf32)
    gy = torch.randn_like(y)
    got = [y] + list(torch.autograd.grad(y, leaves, gy))
    ref_leaves = [t.detach().double().requires_grad_() for t in leaves]
    y_ref = F.conv2d(*ref_leaves, padding=1)
    ref = [y_ref] + list(torch.autograd.grad(y_ref, ref_leaves, gy.double()))
    for name, a, r in zip(("output", "grad_input", "grad_weight", "grad_bias"), got, ref):
        err = ((a.double() - r).norm() / r.norm()).item()
        assert err < 2e-3, (name, err)


BAD = [
    (lambda x, w, b: pixelops.conv2d(x, w[:, :2], b), ValueError, "channels"),
    (lambda x, w, b: pixelops.conv2d(x, w, b, groups=2), ValueError, "groups"),
    (lambda x, w, b: pixelops.conv2d(x, w, b, groups=0), ValueError, "groups"),
    (lambda x, w, b: pixelops.conv2d(x[0, 0], w, b), ValueError, "input"),
    (lambda x, w, b: pixelops.conv2d(x, w[0], b), ValueError, "weight"),
    (lambda x, w, b: pixelops.conv2d(x, w, b[:2]), ValueError, "bias"),
    (lambda x, w, b: pixelops.conv2d(x[..., :2, :2], w, b), ValueError, "larger than the padded input"),
    (lambda x, w, b: pixelops.conv2d(x, w, b, stride=0), ValueError, "stride"),
    (lambda x, w, b: pixelops.conv2d(x, w, b, dilation=(1, 0)), ValueError, "dilation"),
    (lambda x, w, b: pixelops.conv2d(x, w, b, padding=-1), ValueError, "padding"),
    (lambda x, w, b: pixelops.conv2d(x, w, b, padding="full"), ValueError, "padding"),
    (lambda x, w, b: pixelops.conv2d(x, w, b, padding="same", stride=2), ValueError, "padding"),
    (lambda x, w, b: pixelops.conv2d(x, w, b, stride=1.5), TypeError, "stride"),
    (lambda x, w, b: pixelops.conv2d(x, w, b, activation="gelu"), ValueError, "activation"),
    (lambda x, w, b: pixelops.conv2d(x.long(), w, b), TypeError, "input"),
    (lambda x, w, b: pixelops.conv2d(x, w.double(), b), TypeError, "dtype"),
    (lambda x, w, b: pixelops.conv2d(x, w, b.double()), TypeError, "dtype"),
    (lambda x, w, b: pixelops.conv2d(x, w.numpy(), b), TypeError, "weight"),
    (lambda x, w, b: pixelops.conv2d([1.0], w, b), TypeError, "input"),
    (lambda x, w, b: pixelops.conv2d(x, w.tolist(), b), TypeError, "weight"),
    (lambda x, w, b: pixelops.conv2d(x, 2.0, b), TypeError, "weight"),
    (lambda x, w, b: pixelops.conv2d(x, w, b.tolist()), TypeError, "bias"),
    (lambda x, w, b: pixelops.conv2d(x.numpy(), w.numpy(), b.tolist()), TypeError, "bias"),
    (lambda x, w, b: pixelops.conv2d(x.numpy(), w.numpy(), b.numpy(), stride=True), TypeError, "stride"),
    (lambda x, w, b: pixelops.conv2d(x.numpy(), w.numpy(), b.numpy(), allow_tf32="yes"), TypeError, "allow_tf32"),
]


@pytest.mark.parametrize("call,error,words", BAD)
def test_bad_input(call, error, words):
    x, w, b = _data((2, 4, 6, 6), (6, 3, 3), 1, torch.float32, "cpu")
    with pytest.raises(error, match=words):
        call(x, w, b)


@pytest.mark.parametrize("call,error,words", BAD + [
    (lambda x, w, b: pixelops.conv2d(x, w, b, stride=True), TypeError, "stride"),
    (lambda x, w, b: pixelops.conv2d(x, w, b, padding=(True, 1)), TypeError, "padding"),
    (lambda x, w, b: pixelops.conv2d(x, w, b, allow_tf32=1), TypeError, "allow_tf32"),
])
def test_bad_input_after_good_calls(call, error, words):
    # Checked setups are remembered per call signature (ops/conv2d.py): after accepted calls that a refused one
    # resembles (int 1 against True, the same shapes), the refused one must still raise, and the accepted ones
    # must still be right.
    x, w, b = _data((2, 4, 6, 6), (6, 3, 3), 1, torch.float32, "cpu")
    good = ({}, {"stride": 1}, {"padding": (1, 1)}, {"allow_tf32": True}, {"groups": 1})
    for kw in good:
        pixelops.conv2d(x, w, b, **kw)
        pixelops.conv2d(x.numpy(), w.numpy(), b.numpy(), **kw)
    with pytest.raises(error, match=words):
        call(x, w, b)
    for kw in good:
        torch.testing.assert_close(pixelops.conv2d(x, w, b, **kw), F.conv2d(x, w, b, **{
            k: v for k, v in kw.items() if k != "allow_tf32"}), rtol=1e-5, atol=1e-5)


def test_huge_strides_and_paddings():
    # a stride past the input gives one output pixel: it ran in time proportional to the stride (8 s at 2**31);
    # beyond 32 bits the kernels' indices would overflow, so the checks name the argument there
    x = torch.randn(1, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 2, 2, 2, dtype=torch.float64, requires_grad=True)
    for stride in (2 ** 27, (5, 2 ** 31 - 1)):
        y = pixelops.conv2d(x, w, stride=stride)
        ref = F.conv2d(x, w, stride=stride)
        torch.testing.assert_close(y, ref)
        g = torch.randn_like(ref)
        for a, r in zip(torch.autograd.grad(y, (x, w), g), torch.autograd.grad(ref, (x, w), g)):
            torch.testing.assert_close(a, r)
    for kw, name in ((dict(stride=2 ** 40), "stride"), (dict(dilation=2 ** 31), "dilation"),
                     (dict(padding=10 ** 20), "padding")):
        with pytest.raises(ValueError, match=f"'{name}' must be at most 2\\*\\*31 - 1"):
            pixelops.conv2d(x, w, **kw)


def test_a_sparse_input_after_a_dense_call_of_the_same_shape():
    # the cache of checked calls keyed shapes, dtypes and devices, not layouts: a sparse tensor then reached
    # the kernel ("Cannot access data pointer")
    x, w = torch.randn(1, 1, 4, 4), torch.randn(1, 1, 3, 3)
    pixelops.conv2d(x, w)
    with pytest.raises(TypeError, match="'input' is a sparse_coo tensor"):
        pixelops.conv2d(x.to_sparse(), w)
    logits, t = torch.randn(3, 4), torch.tensor([0, 1, 2])
    pixelops.cross_entropy(logits, t)
    with pytest.raises(TypeError, match="'input' is a sparse_coo tensor"):
        pixelops.cross_entropy(logits.to_sparse(), t)


def test_a_choice_of_the_wrong_type_is_a_type_error():
    # the README's rule: TypeError for types, ValueError for values (activation=1 was a ValueError)
    x, w = torch.randn(1, 1, 5, 5), torch.randn(1, 1, 3, 3)
    for call, exc in ((lambda: pixelops.conv2d(x, w, activation=1), TypeError),
                      (lambda: pixelops.conv2d(x, w, activation="gelu"), ValueError),
                      (lambda: pixelops.masked_conv2d(x, w, mask_type=1), TypeError),
                      (lambda: pixelops.masked_conv2d(x, w, mask_type="C"), ValueError),
                      (lambda: pixelops.cross_entropy(x[0, 0], torch.tensor([0] * 5), reduction=1), TypeError),
                      (lambda: pixelops.cross_entropy(x[0, 0], torch.tensor([0] * 5), reduction="avg"), ValueError)):
        with pytest.raises(exc, match="must be"):
            call()
