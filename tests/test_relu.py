"""pixelops.relu against torch.relu: values, gradients, layouts, in-place, numpy, bad input."""
import numpy as np
import pytest
import torch

import pixelops
import pixelops._torch.common
from _util import DEVICES, LAYOUTS, strided

SHAPES = [(0,), (1,), (7,), (33, 5), (3, 17, 13), (2, 3, 5, 7), (1 << 16) + 3]


def _randn(shape, dtype, device):
    shape = shape if isinstance(shape, tuple) else (shape,)
    return torch.randn(shape, dtype=torch.float64, device=device).to(dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_forward_backward_match_torch(device, shape, layout):
    x = strided(_randn(shape, torch.float32, device), layout).requires_grad_()
    g = _randn(tuple(x.shape), torch.float32, device)
    y = pixelops.relu(x)
    (gx,) = torch.autograd.grad(y, x, g)
    x_ref = x.detach().double().requires_grad_()
    y_ref = torch.relu(x_ref)
    (gx_ref,) = torch.autograd.grad(y_ref, x_ref, g.double())
    assert y.shape == x.shape and y.dtype == x.dtype
    torch.testing.assert_close(y.double(), y_ref, rtol=0, atol=0)
    torch.testing.assert_close(gx.double(), gx_ref, rtol=0, atol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_gradient_arriving_with_zero_strides(device):
    # y.sum() sends back an expanded gradient (stride 0): the backward kernel must read it as a view.
    x = _randn((5, 6), torch.float64, device).requires_grad_()
    pixelops.relu(x).sum().backward()
    torch.testing.assert_close(x.grad, (x > 0).double())


def test_gradcheck_float64():
    x = torch.randn(4, 9, dtype=torch.float64)
    x = (x + 0.1 * torch.sign(x)).requires_grad_()  # keep away from the kink at 0
    assert torch.autograd.gradcheck(pixelops.relu, (x,))
    assert torch.autograd.gradcheck(pixelops.relu, (x.detach().t().requires_grad_(),))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cpu_dtypes(dtype):
    x = _randn((129, 3), dtype, "cpu")
    torch.testing.assert_close(pixelops.relu(x), torch.relu(x), rtol=0, atol=0)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("n", [1, 7, 8, 4099, (1 << 20) + 5])
def test_cuda_dtypes_and_tails(dtype, n):
    x = _randn(n, dtype, "cuda").requires_grad_()
    g = _randn(n, dtype, "cuda")
    y = pixelops.relu(x)
    (gx,) = torch.autograd.grad(y, x, g)
    (gx_ref,) = torch.autograd.grad(torch.relu(x), x, g)
    torch.testing.assert_close(y, torch.relu(x), rtol=0, atol=0)
    torch.testing.assert_close(gx, gx_ref, rtol=0, atol=0)


@pytest.mark.cuda
def test_cuda_runs_on_current_stream_and_right_device():
    # On a side stream kept busy, x is written and then relu'd: a kernel launched on any other stream would
    # run during the sleep and read the NaNs x held before the copy.
    src = _randn((1 << 20,), torch.float32, "cuda")
    x = torch.full_like(src, float("nan"))
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())  # src and x are ready before s uses them
    with torch.cuda.stream(s):
        torch.cuda._sleep(20_000_000)
        x.copy_(src)
        y = pixelops.relu(x)
    s.synchronize()
    torch.testing.assert_close(y, torch.relu(src), rtol=0, atol=0)


def test_nan_and_signed_values_follow_torch():
    x = torch.tensor([float("nan"), -1.5, -0.0, 0.0, 2.5, float("inf"), -float("inf")])
    torch.testing.assert_close(pixelops.relu(x), torch.relu(x), equal_nan=True, rtol=0, atol=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_inplace_writes_into_input(device, layout):
    x = strided(_randn((6, 11), torch.float32, device), layout)
    expected = torch.relu(x)
    out = pixelops.relu(x, inplace=True)
    assert out is x
    torch.testing.assert_close(x, expected, rtol=0, atol=0)


def test_inplace_with_autograd_on_non_leaf():
    a = torch.randn(8, 5, dtype=torch.float64, requires_grad=True)
    b = a * 2
    y = pixelops.relu(b, inplace=True)
    assert y is b
    y.sum().backward()
    torch.testing.assert_close(a.grad, 2 * (a > 0).double())


def test_inplace_on_leaf_requiring_grad_raises_like_torch():
    a = torch.randn(4, requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf"):
        pixelops.relu(a, inplace=True)


@pytest.mark.parametrize("device", DEVICES)
def test_inplace_on_a_tensor_another_graph_saved_fails_its_backward(device):
    # x needs no gradient, but w * x saved it: after an in-place ReLU, w's gradient would use the new values;
    # torch's version check must catch that, as after torch.relu_
    w = torch.randn(6, dtype=torch.float64, device=device, requires_grad=True)
    x = torch.randn(6, dtype=torch.float64, device=device)
    z = (w * x).sum()
    pixelops.relu(x, inplace=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        z.backward()


def test_inplace_second_derivative_like_torch():
    # a gradient penalty's create_graph=True through an in-place ReLU (a swapped nn.ReLU(inplace=True))
    base = torch.randn(9, dtype=torch.float64)
    leaves = [base.clone().requires_grad_() for _ in range(2)]
    grads = []
    for relu_, leaf in zip((lambda t: pixelops.relu(t, inplace=True), torch.relu_), leaves):
        (g,) = torch.autograd.grad((relu_(leaf * 1.5) ** 3).sum(), leaf, create_graph=True)
        grads.append(torch.autograd.grad((g * g).sum(), leaf)[0])
    torch.testing.assert_close(grads[0], grads[1])
    assert grads[1].abs().sum() > 0


def test_inplace_refused_where_torch_refuses():
    with pytest.raises(RuntimeError, match="share memory"):  # an expanded view: one element, three places
        pixelops.relu(torch.randn(2).expand(3, 2), inplace=True)
    with torch.inference_mode():
        t = torch.randn(5)
        assert pixelops.relu(t, inplace=True) is t  # allowed there
    with pytest.raises(RuntimeError, match="inference"):
        pixelops.relu(t, inplace=True)


def test_not_inplace_leaves_input_alone():
    x = torch.randn(100)
    before = x.clone()
    pixelops.relu(x)
    assert torch.equal(x, before)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numpy_in_numpy_out(dtype):
    x = np.random.default_rng(0).standard_normal((13, 7)).astype(dtype)
    y = pixelops.relu(x[:, ::2])
    assert isinstance(y, np.ndarray) and y.dtype == dtype
    np.testing.assert_array_equal(y, np.maximum(x[:, ::2], 0))
    z = x.copy()
    assert pixelops.relu(z, inplace=True) is z
    np.testing.assert_array_equal(z, np.maximum(x, 0))


def test_no_grad_gives_plain_tensor():
    x = torch.randn(10, requires_grad=True)
    with torch.no_grad():
        y = pixelops.relu(x)
    assert not y.requires_grad


def test_available_backends():
    b = pixelops.available_backends()
    assert b["cpu"] is True and isinstance(b["cuda"], bool)
    assert b["cuda"] == (pixelops._C.built_with_cuda and torch.cuda.is_available())


# ---- bad input -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.bool, torch.complex64])
def test_integer_and_other_dtypes_rejected(dtype):
    x = torch.ones(4, dtype=dtype)
    with pytest.raises(TypeError, match="'input' must have dtype float32 or float64 on cpu"):
        pixelops.relu(x)


def test_numpy_half_and_integers_rejected():
    # (CPU half tensors are computed in float32: test_cpu_half_as_autocast_hands_it_on; numpy has no such path)
    with pytest.raises(TypeError, match="'input'.*float16"):
        pixelops.relu(np.ones(4, dtype=np.float16))
    with pytest.raises(TypeError, match="'input'"):
        pixelops.relu(np.ones(3, dtype=np.int64))


def test_non_array_rejected():
    with pytest.raises(TypeError, match="'input' must be a numpy array or a torch tensor, got list"):
        pixelops.relu([1.0, -2.0])


def test_read_only_numpy_inplace_rejected():
    x = np.ones(3, dtype=np.float32)
    x.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        pixelops.relu(x, inplace=True)


def test_meta_device_rejected():
    with pytest.raises(ValueError, match="'input' is on device meta"):
        pixelops.relu(torch.empty(3, device="meta"))


def test_cuda_tensor_without_cuda_build_message(monkeypatch):
    # A CPU-only machine cannot make a CUDA tensor: a subclass that reports itself as one reaches the check.
    class LooksCuda(torch.Tensor):
        is_cuda = property(lambda self: True)
        is_cpu = property(lambda self: False)

    fake = torch.randn(3).as_subclass(LooksCuda)
    # What a build without CUDA kernels looks like to the checks (the torch side's dtype table is built once).
    monkeypatch.setattr(pixelops._arrays._C, "built_with_cuda", False)
    monkeypatch.setattr(pixelops._torch.common, "_CUDA_FLOATS", frozenset())
    with pytest.raises(RuntimeError, match="'input' is a CUDA tensor, but this pixelops build has no CUDA kernels"):
        pixelops.relu(fake)


def test_sparse_and_too_many_dimensions_are_refused_by_name():
    # (before: "Cannot access data pointer" from the extension, and a message naming neither op nor argument)
    with pytest.raises(TypeError, match=r"pixelops\.relu: 'input' is a sparse_coo tensor"):
        pixelops.relu(torch.randn(3, 3).to_sparse())
    with pytest.raises(ValueError, match=r"pixelops\.relu: 'input' has 9 dimensions"):
        pixelops.relu(torch.randn((1,) * 8 + (3,)))
    with pytest.raises(TypeError, match=r"pixelops\.cross_entropy: 'input' is a sparse_coo tensor"):
        pixelops.cross_entropy(torch.randn(3, 3).to_sparse(), torch.tensor([0, 1, 2]))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cpu_half_as_autocast_hands_it_on(dtype):
    # under CPU autocast pixelops.conv2d returns bfloat16: pixelops.relu refused it, so the ops did not chain
    x = torch.randn(6, 7).to(dtype).requires_grad_()
    y = pixelops.relu(x)
    assert y.dtype == dtype and torch.equal(y, torch.relu(x))
    (g,) = torch.autograd.grad(y, x, torch.ones_like(y))
    assert torch.equal(g, (x > 0).to(dtype))
    z = x.detach().clone()
    assert pixelops.relu(z, inplace=True) is z and torch.equal(z, torch.relu(x.detach()))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        w = torch.randn(3, 2, 3, 3)
        out = pixelops.relu(pixelops.conv2d(torch.randn(1, 2, 5, 5), w, padding=1))
    assert out.dtype == torch.bfloat16 and (out >= 0).all()
