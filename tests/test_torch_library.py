"""The PyTorch machinery: every pixelops:: op passes torch.library.opcheck, fake/dispatch modes take the
custom-op path, and torch.compile(fullgraph=True) of a pixelops model matches eager."""
import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.experimental.proxy_tensor import make_fx

import pixelops
import pixelops.nn  # noqa: F401  (registers every op)
from pixelops._torch import common
from opcheck_cases import CASES


def registered_ops():
    names = {n.split("::", 1)[1] for n in torch._C._dispatch_get_all_op_names() if n.startswith("pixelops::")}
    return sorted(names)


def test_every_registered_op_has_an_opcheck_case():
    missing = [name for name in registered_ops() if name not in CASES]
    assert not missing, f"add opcheck cases to tests/opcheck_cases.py for: {missing}"
    assert "relu" in registered_ops() and "relu_backward" in registered_ops()


@pytest.mark.parametrize("name,make", [(n, m) for n, ms in sorted(CASES.items()) for m in ms],
                         ids=lambda v: v if isinstance(v, str) else v.__name__)
def test_opcheck(name, make):
    op = getattr(torch.ops.pixelops, name).default
    args, kwargs = make()
    torch.library.opcheck(op, args, kwargs)


def test_compiling_is_false_in_plain_eager():
    assert not common.compiling()


def test_fake_mode_takes_the_custom_op_path():
    with FakeTensorMode():
        assert common.compiling()
        x = torch.randn(4, 5)
        y = pixelops.relu(x)
        assert y.shape == (4, 5) and y.dtype == x.dtype


def test_make_fx_traces_pixelops_ops_forward_and_backward():
    def step(x):
        y = pixelops.relu(x)
        (g,) = torch.autograd.grad(y.sum(), x)
        return y, g

    gm = make_fx(step, tracing_mode="fake")(torch.randn(3, 4, requires_grad=True))
    text = str(gm.graph)
    assert "pixelops.relu.default" in text and "pixelops.relu_backward.default" in text


def test_eager_double_backward():
    # create_graph=True routes the eager backward through the torch.func path's backward Function, whose own
    # backward is the op's double-backward rule: a second derivative as torch's (ReLU's is zero almost
    # everywhere, so the test differentiates a product of the gradient with the input)
    x = torch.randn(6, dtype=torch.float64, requires_grad=True)
    (gx,) = torch.autograd.grad((pixelops.relu(x) * x).sum(), x, create_graph=True)
    (ggx,) = torch.autograd.grad((gx * x).sum(), x)
    xr = x.detach().requires_grad_()
    (rx,) = torch.autograd.grad((torch.relu(xr) * xr).sum(), xr, create_graph=True)
    (rgx,) = torch.autograd.grad((rx * xr).sum(), xr)
    torch.testing.assert_close(gx, rx)
    torch.testing.assert_close(ggx, rgx)


def test_compiled_double_backward_fails_loudly():
    # the custom op's backward (what torch.compile and opcheck see) has no autograd of its own: a second
    # derivative through it raises instead of giving zeros
    x = torch.randn(6, dtype=torch.float64, requires_grad=True)
    from pixelops._torch.relu import relu_op
    (gx,) = torch.autograd.grad(relu_op(x).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="no autograd formula"):
        torch.autograd.grad(gx.sum(), x)


def test_eager_path_unwraps_tensors_leaked_from_a_functorch_transform():
    # The eager path calls torch's C++ apply directly (common.eager_apply); like Function.apply it first
    # unwraps dead functorch wrappers (tensors that escaped a torch.func transform), which the kernels could
    # not read. Their values and gradients are those of the plain tensors.
    leaked = {}

    def f(t):
        leaked["y"] = t * 2
        return (t * t).sum()

    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    torch.func.grad(f)(x)
    y = leaked["y"]
    assert torch._C._functorch.is_functorch_wrapped_tensor(y)
    w = torch.randn(5, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    out = pixelops.conv2d(pixelops.relu(y), w, padding=1)
    ref = torch.nn.functional.conv2d((2 * x).relu(), w, padding=1)
    torch.testing.assert_close(out, ref)
    (gw,) = torch.autograd.grad(out.sum(), w)
    (rw,) = torch.autograd.grad(ref.sum(), w)
    torch.testing.assert_close(gw, rw)
