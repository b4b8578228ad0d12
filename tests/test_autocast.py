"""torch.autocast: pixelops follows PyTorch's policy (convolution in the low precision, cross-entropy in
float32), on the functionals, the nn modules and a whole training step."""
import re

import pytest
import torch
import torch.nn.functional as F

import pixelops
from nn_models import batch, small_cnn

CPU_LOW = [torch.bfloat16, torch.float16]


@pytest.mark.parametrize("low", CPU_LOW)
def test_cpu_autocast_conv_low_precision_and_cross_entropy_float32(low):
    x = torch.randn(2, 3, 9, 8, requires_grad=True)
    w = torch.randn(5, 3, 3, 3, requires_grad=True)
    b = torch.randn(5, requires_grad=True)
    t = torch.randint(0, 5, (2, 9, 8))
    with torch.autocast("cpu", dtype=low):
        y, y_ref = pixelops.conv2d(x, w, b, padding=1), F.conv2d(x, w, b, padding=1)
        assert y.dtype == y_ref.dtype == low
        loss, loss_ref = pixelops.cross_entropy(y, t), F.cross_entropy(y_ref, t)
        assert loss.dtype == loss_ref.dtype == torch.float32
        m = pixelops.masked_conv2d(x, w, b, "A")
        assert m.dtype == low
    torch.testing.assert_close(y.float(), y_ref.float(), rtol=2e-2, atol=5e-2)
    torch.testing.assert_close(loss, loss_ref, rtol=2e-2, atol=2e-2)
    g, g_ref = torch.autograd.grad(loss, [x, w, b]), torch.autograd.grad(loss_ref, [x, w, b])
    for a, r in zip(g, g_ref):
        assert a.dtype == r.dtype == torch.float32  # gradients of float32 leaves stay float32, as with torch
        torch.testing.assert_close(a, r, rtol=5e-2, atol=5e-2)


def test_autocast_leaves_float64_and_no_autocast_alone():
    x, w = torch.randn(1, 2, 5, 5, dtype=torch.float64), torch.randn(3, 2, 3, 3, dtype=torch.float64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert pixelops.conv2d(x, w).dtype == torch.float64
    assert pixelops.conv2d(x.float(), w.float()).dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=False):
        assert pixelops.conv2d(x.float(), w.float()).dtype == torch.float32


def test_swapped_model_trains_under_cpu_autocast_like_torch():
    ref, ours = small_cnn(), pixelops.swap(small_cnn(), verbose=False)
    x, y = batch()
    outs = []
    for model, loss_fn in ((ref, torch.nn.CrossEntropyLoss()), (ours, pixelops.nn.CrossEntropyLoss())):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(x)
            loss = loss_fn(logits, y)
        loss.backward()
        outs.append((logits.dtype, loss.dtype, [p.grad.dtype for p in model.parameters()]))
        assert loss.isfinite()
    assert outs[0] == outs[1]


@pytest.mark.cuda
@pytest.mark.parametrize("low", [torch.float16, torch.bfloat16])
def test_cuda_autocast_dtypes(low):
    model = pixelops.swap(small_cnn(device="cuda"), verbose=False)
    x, y = batch(device="cuda")
    with torch.autocast("cuda", dtype=low):
        h = model[0](x)
        assert h.dtype == low
        assert model[1](h).dtype == low
        loss = pixelops.nn.CrossEntropyLoss()(model(x), y)
        assert loss.dtype == torch.float32
    loss.backward()
    ref = small_cnn(device="cuda")
    with torch.autocast("cuda", dtype=low):
        ref_loss = F.cross_entropy(ref(x), y)
    torch.testing.assert_close(loss, ref_loss, rtol=3e-2, atol=3e-2)


def test_autocast_inside_a_compiled_function():
    torch._dynamo.reset()
    model = pixelops.swap(small_cnn(), verbose=False)
    x, y = batch()

    def loss(x, y):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return pixelops.nn.CrossEntropyLoss()(model(x), y)

    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")(x, y)
    eager = loss(x, y)
    assert compiled.dtype == eager.dtype == torch.float32
    torch.testing.assert_close(compiled, eager)


def test_fused_relu_under_cpu_float16_autocast_gates_on_the_rounded_output():
    # CPU autocast computes in float32 and rounds after: outputs near 1e-8 round to 0 in float16, and torch's
    # ReLU of the float16 conv passes them no gradient; the fused ReLU passed it (it gated the float32 output)
    gen = torch.Generator().manual_seed(5)
    x = torch.rand(2, 2, 5, 4, generator=gen) * 1e-4
    w = torch.rand(3, 2, 1, 1, generator=gen) * 1e-4
    w[:, 1] *= -1  # each output one input channel's share less the other's: of either sign
    w[2] *= 1e4    # one output channel of ordinary size
    g = torch.randn(2, 3, 5, 4, generator=gen)
    grads = []
    for fused in (False, True):
        xi, wi = x.clone().requires_grad_(), w.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.float16):
            y = pixelops.conv2d(xi, wi, activation="relu") if fused else F.relu(F.conv2d(xi, wi))
        assert y.dtype == torch.float16
        (y.float() * g).sum().backward()
        grads.append((y, xi.grad, wi.grad))
    (ref, gx_ref, gw_ref), (ours, gx, gw) = grads
    tiny = (F.conv2d(x, w)[:, :2] > 0) & (ours[:, :2] == 0)
    assert tiny.sum() >= 10  # the case at hand: positive outputs flushed to zero by the rounding
    torch.testing.assert_close(ours, ref, rtol=1e-3, atol=1e-7)
    torch.testing.assert_close(gw[:2], gw_ref[:2], rtol=1e-2, atol=1e-12)
    torch.testing.assert_close(gx, gx_ref, rtol=1e-2, atol=1e-6)


@pytest.mark.parametrize("low", CPU_LOW)
@pytest.mark.parametrize("given", CPU_LOW + [torch.float32])
def test_autocast_dtype_errors_name_the_dtypes_passed(low, given):
    # a tensor autocast casts meeting a float64 one, which it leaves: torch refuses the call, and so does
    # pixelops, whose message named the dtype of its float32 work copy ("'input' has float32" for float16)
    name = str(given).replace("torch.", "")
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(1, 3, 5, 5, generator=gen).to(given)
    w, w64 = torch.randn(4, 3, 3, 3, generator=gen), torch.randn(4, 3, 3, 3, generator=gen).double()
    logits, t = torch.randn(4, 5, generator=gen).to(given), torch.randint(0, 5, (4,), generator=gen)
    conv64, ref64 = pixelops.nn.Conv2d(3, 4, 3).double(), torch.nn.Conv2d(3, 4, 3).double()
    cases = [  # (pixelops' call, torch's, what pixelops' message must say)
        (lambda: pixelops.conv2d(x, w64), lambda: F.conv2d(x, w64),
         f"pixelops.conv2d: 'weight' has dtype float64 but 'input' has {name}"),
        (lambda: pixelops.masked_conv2d(x, w64), lambda: F.conv2d(x, w64, padding=1),
         f"pixelops.masked_conv2d: 'weight' has dtype float64 but 'input' has {name}"),
        (lambda: pixelops.conv2d(x, w, w64[:, 0, 0, 0]), lambda: F.conv2d(x, w, w64[:, 0, 0, 0]),
         f"'bias' has dtype float64 but 'input' has {name}"),
        (lambda: conv64(x), lambda: ref64(x), f"'weight' has dtype float64 but 'input' has {name}"),
        (lambda: pixelops.cross_entropy(logits, t, torch.ones(5, dtype=torch.float64)),
         lambda: F.cross_entropy(logits, t, torch.ones(5, dtype=torch.float64)),
         f"pixelops.cross_entropy: 'weight' has dtype float64 but 'input' has {name}"),
        (lambda: pixelops.cross_entropy(logits.double(), t, torch.ones(5, dtype=given)),
         lambda: F.cross_entropy(logits.double(), t, torch.ones(5, dtype=given)),
         f"'weight' has dtype {name} but 'input' has float64"),
    ]
    with torch.autocast("cpu", dtype=low):
        for ours, ref, message in cases:
            with pytest.raises(RuntimeError):
                ref()
            with pytest.raises(TypeError, match=re.escape(message) + ".*under torch.autocast"):
                ours()


@pytest.mark.cuda
def test_cuda_autocast_dtype_errors_name_the_dtypes_passed():
    # on CUDA the cast is the kernels' own dtype: the message said "'input' has float16" for a float32 input
    x, w64 = torch.randn(1, 3, 5, 5, device="cuda"), torch.randn(4, 3, 3, 3, dtype=torch.float64, device="cuda")
    with torch.autocast("cuda", dtype=torch.float16):
        with pytest.raises(TypeError, match="'weight' has dtype float64 but 'input' has float32; under torch.autocast"):
            pixelops.conv2d(x, w64)
