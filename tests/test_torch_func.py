"""pixelops' ops under torch.func transforms (grad, vmap, vmap(grad) per-sample gradients, jacrev, jvp,
jacfwd, hessian, functional_call), compared with PyTorch's functionals under the same transforms, in float64,
on the CPU and on CUDA where a GPU is present."""
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, jacrev, vmap

import pixelops
from _util import DEVICES

TOL = dict(rtol=1e-10, atol=1e-12)

# (stride, padding, dilation, groups, bias, activation): awkward options, each with batched inputs
CONV_OPTIONS = [
    (1, 1, 1, 1, True, None),
    (2, (1, 2), 1, 2, True, "relu"),
    ((1, 2), 0, (2, 1), 1, False, None),
    (1, "same", 2, 3, True, "relu"),
]


def _ref_conv(x, w, b, stride, padding, dilation, groups, activation):
    y = F.conv2d(x, w, b, stride, padding, dilation, groups)
    return y.relu() if activation == "relu" else y


def _ours_conv(x, w, b, stride, padding, dilation, groups, activation):
    return pixelops.conv2d(x, w, b, stride, padding, dilation, groups, activation=activation)


def _conv_args(options, device, gen, batch=5, n=2):
    stride, padding, dilation, groups, with_bias, activation = options
    cin, cout = 2 * groups, 3 * groups
    xs = torch.randn(batch, n, cin, 9, 8, dtype=torch.float64, generator=gen).to(device)
    w = torch.randn(cout, cin // groups, 3, 3, dtype=torch.float64, generator=gen).to(device)
    b = torch.randn(cout, dtype=torch.float64, generator=gen).to(device) if with_bias else None
    return xs, w, b, (stride, padding, dilation, groups, activation)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("options", CONV_OPTIONS)
def test_conv2d_per_sample_gradients(device, options):
    # vmap(grad(loss)) over a batch of inputs with the layer's parameters shared: each entry gets its own
    # weight (and bias) gradient, the Opacus-style per-sample gradient
    gen = torch.Generator().manual_seed(1)
    xs, w, b, opts = _conv_args(options, device, gen)
    targets = torch.randn(xs.shape[0], dtype=torch.float64, generator=gen).to(device)

    def per_sample(conv):
        def loss(params, x, t):
            y = conv(x, params[0], params[1] if len(params) > 1 else None, *opts)
            return ((y * y.flip(-1)).sum() - t) ** 2  # not linear in y: the gradient depends on the values
        params = (w, b) if b is not None else (w,)
        return vmap(grad(loss), in_dims=(None, 0, 0))(params, xs, targets)

    for xs in (xs, xs[:, 0]):  # each example a batch of its own, or one unbatched (C, H, W) image
        ours, ref = per_sample(_ours_conv), per_sample(_ref_conv)
        assert len(ours) == len(ref)
        for o, r in zip(ours, ref):
            assert o.shape == (xs.shape[0], *r.shape[1:])
            torch.testing.assert_close(o, r, **TOL)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("options", CONV_OPTIONS)
def test_conv2d_vmap_over_weights_and_inputs(device, options):
    # an ensemble: every batch entry has weights (and bias) of its own; forward, and the gradients of all
    # three through grad inside vmap
    gen = torch.Generator().manual_seed(2)
    xs, w, b, opts = _conv_args(options, device, gen, batch=4)
    ws = torch.stack([w * (1 + 0.1 * i) for i in range(4)])
    bs = None if b is None else torch.stack([b - i for i in range(4)])
    for in_dims, x_arg in (((0, 0, 0), xs), ((None, 0, 0), xs[0])):
        b_dims = in_dims if bs is not None else in_dims[:2] + (None,)
        fwd = [vmap(lambda x, w_, b_: conv(x, w_, b_, *opts), in_dims=b_dims)(x_arg, ws, bs)
               for conv in (_ours_conv, _ref_conv)]
        torch.testing.assert_close(fwd[0], fwd[1], **TOL)

        def grads(conv):
            def loss(x, w_, b_):
                return conv(x, w_, b_, *opts).square().sum()
            return vmap(grad(loss, argnums=(0, 1) if bs is None else (0, 1, 2)), in_dims=b_dims)(x_arg, ws, bs)

        for o, r in zip(grads(_ours_conv), grads(_ref_conv)):
            torch.testing.assert_close(o, r, **TOL)


@pytest.mark.parametrize("device", DEVICES)
def test_conv2d_grad_and_jacrev(device):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 6, 7, dtype=torch.float64, generator=gen).to(device)
    w = torch.randn(6, 2, 3, 2, dtype=torch.float64, generator=gen).to(device)
    b = torch.randn(6, dtype=torch.float64, generator=gen).to(device)
    opts = (2, (1, 0), 1, 2, "relu")
    for argnums in (0, 1, 2, (0, 1, 2)):
        g = [grad(lambda *a: conv(*a, *opts).sin().sum(), argnums=argnums)(x, w, b) for conv in (_ours_conv,
                                                                                              _ref_conv)]
        torch.testing.assert_close(g[0], g[1], **TOL)
    # jacrev: vmap over the backward's incoming gradient, the saved tensors shared
    jac = [jacrev(lambda x_, w_: conv(x_, w_, b, *opts), argnums=(0, 1))(x, w) for conv in (_ours_conv, _ref_conv)]
    for o, r in zip(*jac):
        torch.testing.assert_close(o, r, **TOL)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mask_type", ["A", "B"])
def test_masked_conv2d_per_sample_gradients(device, mask_type):
    gen = torch.Generator().manual_seed(4)
    xs = torch.randn(3, 1, 4, 7, 6, dtype=torch.float64, generator=gen).to(device)
    w = torch.randn(5, 4, 5, 5, dtype=torch.float64, generator=gen).to(device)
    b = torch.randn(5, dtype=torch.float64, generator=gen).to(device)
    mask = pixelops.conv_mask(5, mask_type, dtype=torch.float64, device=device)

    def per_sample(conv):
        return vmap(grad(lambda w_, b_, x: conv(x, w_, b_).tanh().sum(), argnums=(0, 1)), in_dims=(None, None, 0))(
            w, b, xs)

    ours = per_sample(lambda x, w_, b_: pixelops.masked_conv2d(x, w_, b_, mask_type))
    ref = per_sample(lambda x, w_, b_: F.conv2d(x, w_ * mask, b_, padding="same"))
    for o, r in zip(ours, ref):
        torch.testing.assert_close(o, r, **TOL)
    assert (ours[0][:, :, :, mask == 0] == 0).all()  # masked taps get exactly zero, per sample too


@pytest.mark.parametrize("device", DEVICES)
def test_relu_under_transforms(device):
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(4, 3, 5, dtype=torch.float64, generator=gen).to(device)
    v = torch.randn(3, 5, dtype=torch.float64, generator=gen).to(device)
    torch.testing.assert_close(vmap(pixelops.relu)(x), x.relu(), **TOL)
    torch.testing.assert_close(vmap(pixelops.relu, in_dims=2, out_dims=1)(x), x.relu().movedim(2, 1), **TOL)
    for f, ref in ((pixelops.relu, torch.relu),):
        # the backward's y batched and its gradient not (vmap over the input of grad's closure), and both
        ours = vmap(grad(lambda a: (f(a) * v).sum()))(x)
        torch.testing.assert_close(ours, vmap(grad(lambda a: (ref(a) * v).sum()))(x), **TOL)
        ours = vmap(grad(lambda a, u: (f(a) * u).sum()), in_dims=(None, 0))(x[0], x)
        torch.testing.assert_close(ours, vmap(grad(lambda a, u: (ref(a) * u).sum()), in_dims=(None, 0))(x[0], x),
                                   **TOL)
    y = vmap(lambda a: pixelops.relu(a * 1.0, inplace=True))(x)
    torch.testing.assert_close(y, x.relu(), **TOL)
    # in place on a computed tensor: its gradient and tangent through the copy, as torch.relu_'s
    ours, ref = ((grad(lambda a: f(a).pow(2).sum())(x), torch.func.jvp(f, (x,), (v.expand_as(x),))[1])
                 for f in (lambda a: pixelops.relu(a * 2, inplace=True), lambda a: torch.relu_(a * 2)))
    for o, r in zip(ours, ref):
        torch.testing.assert_close(o, r, **TOL)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kwargs", [dict(), dict(reduction="sum", label_smoothing=0.2),
                                    dict(weight=True, ignore_index=1), dict(reduction="none")])
def test_cross_entropy_per_sample_gradients(device, kwargs):
    gen = torch.Generator().manual_seed(6)
    logits = torch.randn(4, 3, 5, 2, dtype=torch.float64, generator=gen).to(device)  # batch of 4, (N, C, d1)
    target = torch.randint(0, 5, (4, 3, 2), generator=gen).to(device)
    kwargs = dict(kwargs)
    if kwargs.pop("weight", False):
        kwargs["weight"] = torch.rand(5, dtype=torch.float64, generator=gen).to(device) + 0.5

    def per_sample(ce):
        def loss(z, t):
            out = ce(z * 1.5, t, **kwargs)
            return out.sum() if out.dim() else out
        return vmap(grad(loss))(logits, target), vmap(lambda z, t: ce(z, t, **kwargs))(logits, target)

    for o, r in zip(per_sample(pixelops.cross_entropy), per_sample(F.cross_entropy)):
        torch.testing.assert_close(o, r, **TOL)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", ["unbatched", "probabilities", "unbatched probabilities", "uint8, ignore 255",
                                  "all ignored"])
def test_cross_entropy_under_vmap_more_layouts(device, case):
    # each batch entry's loss and gradient as those of that entry alone (the reference: PyTorch entry by entry;
    # its own cross_entropy cannot be vmapped with ignored targets and class weights): entries of one (C) row,
    # class probabilities (mean over the entry's elements), uint8 targets with an ignore_index past the
    # classes, an entry whose targets are all ignored (its mean is 0/0)
    gen = torch.Generator().manual_seed(11)
    kwargs = dict(weight=torch.rand(6, dtype=torch.float64, generator=gen).to(device) + 0.5, label_smoothing=0.1)
    entry = (6,) if case.startswith("unbatched") else (3, 6, 2)
    logits = torch.randn(4, *entry, dtype=torch.float64, generator=gen).to(device)
    if "probabilities" in case:
        target = torch.softmax(torch.randn(4, *entry, dtype=torch.float64, generator=gen), -len(entry)).to(device)
    else:
        target = torch.randint(0, 6, (4, *entry[:-1][:1], *entry[2:]), generator=gen)
        if case == "uint8, ignore 255":
            target[0, 0] = 255
            target = target.to(torch.uint8)
            kwargs["ignore_index"] = 255
        if case == "all ignored":
            target[1] = -100
        target = target.to(device)
    ref_target = target.long() if target.dtype == torch.uint8 else target

    def by_entry(f, us, **kw):
        losses, grads = [], []
        for z, t, u in zip(logits, ref_target, us):
            z = z.detach().requires_grad_()
            losses.append(f(z, t, **kw))
            grads.append(torch.autograd.grad((f(z.cos(), t, **kw) * u).sum(), z)[0])
        return torch.stack(losses).detach(), torch.stack(grads)

    for reduction in ("mean", "sum", "none"):
        # an incoming gradient that varies by entry and position
        one = F.cross_entropy(logits[0], ref_target[0], reduction=reduction, **kwargs)  # an entry's loss
        us = torch.rand(4, *one.shape, dtype=torch.float64, generator=gen).to(device)
        ours = (vmap(lambda z, t: pixelops.cross_entropy(z, t, reduction=reduction, **kwargs))(logits, target),
                vmap(grad(lambda z, t, u: (pixelops.cross_entropy(z.cos(), t, reduction=reduction, **kwargs) * u)
                          .sum()))(logits, target, us))
        for o, r in zip(ours, by_entry(F.cross_entropy, us, reduction=reduction, **kwargs)):
            torch.testing.assert_close(o, r, equal_nan=True, **TOL)
    # a weight per entry takes the loss once per entry
    weight = kwargs.pop("weight")
    ws = torch.stack([weight * (i + 1) for i in range(4)])
    ours = vmap(lambda z, t, w: pixelops.cross_entropy(z, t, w, **kwargs))(logits, target, ws)
    ref = torch.stack([F.cross_entropy(z, t, w, **kwargs) for z, t, w in zip(logits, ref_target, ws)])
    torch.testing.assert_close(ours, ref, equal_nan=True, **TOL)


@pytest.mark.parametrize("device", DEVICES)
def test_module_per_sample_gradients_with_functional_call(device):
    # the usual recipe: functional_call over a model's parameters, vmap(grad) over the examples
    gen = torch.Generator().manual_seed(7)
    torch.manual_seed(7)
    convs = [pixelops.nn.MaskedConv2d(1, 4, 5, mask_type="A"), pixelops.nn.ReLU(),
             pixelops.nn.Conv2d(4, 3, 1)]
    model = torch.nn.Sequential(*convs).double().to(device)
    ref_model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 5, padding=2), torch.nn.ReLU(),
                                    torch.nn.Conv2d(4, 3, 1)).double().to(device)
    ref_model.load_state_dict(model.state_dict())
    with torch.no_grad():
        ref_model[0].weight *= pixelops.conv_mask(5, "A", dtype=torch.float64, device=device)
    x = torch.randn(6, 1, 7, 7, dtype=torch.float64, generator=gen).to(device)
    t = torch.randint(0, 3, (6, 7, 7), generator=gen).to(device)

    def per_sample(m, ce):
        params = {k: v.detach() for k, v in m.named_parameters()}

        def loss(p, xi, ti):
            return ce(functional_call(m, p, (xi[None],)), ti[None])
        return vmap(grad(loss), in_dims=(None, 0, 0))(params, x, t)

    ours, ref = per_sample(model, pixelops.cross_entropy), per_sample(ref_model, F.cross_entropy)
    mask = pixelops.conv_mask(5, "A", dtype=torch.float64, device=device)
    ref["0.weight"] = ref["0.weight"] * mask  # what the masked layer's own weight gradient is
    for k in ref:
        torch.testing.assert_close(ours[k], ref[k], **TOL)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("activation", [None, "relu"])
def test_conv2d_forward_mode_and_second_derivatives(device, activation):
    # a conv's tangent is a conv, and its gradients' derivatives are convs too: jvp, jacfwd, hessian
    # (forward over reverse) and a grad of a grad (reverse over reverse) against torch's
    gen = torch.Generator().manual_seed(8)
    x = torch.randn(2, 4, 6, 5, dtype=torch.float64, generator=gen).to(device)
    w = torch.randn(6, 2, 3, 3, dtype=torch.float64, generator=gen).to(device)
    b = torch.randn(6, dtype=torch.float64, generator=gen).to(device)
    opts = ((2, 1), 1, (1, 2), 2, activation)
    tangents = tuple(torch.randn(t.shape, dtype=torch.float64, generator=gen).to(device) for t in (x, w, b))
    convs = (_ours_conv, _ref_conv)

    def both(f):
        return [f(conv) for conv in convs]

    def check(pair):
        for o, r in zip(*(p if isinstance(p, tuple) else (p,) for p in pair)):
            torch.testing.assert_close(o, r, **TOL)

    check(both(lambda conv: torch.func.jvp(lambda *a: conv(*a, *opts), (x, w, b), tangents)))
    check(both(lambda conv: torch.func.jacfwd(lambda w_: conv(x[:1, :, :3], w_, b, *opts))(w)))

    def loss(conv):  # curved at y = 0 too, where the ReLU gate switches (so the gate's handling shows)
        return lambda x_, w_, b_: (conv(x_, w_, b_, *opts) + 0.5).pow(3).sum()

    for argnums in (0, 1, 2):  # the hessian of x, of w, of b alone (x's is 240 x 240)
        check(both(lambda conv: torch.func.hessian(loss(conv), argnums=argnums)(x, w, b)))
    check(both(lambda conv: torch.func.hessian(loss(conv), argnums=(0, 1, 2))(x[:1], w, b)))
    # reverse over reverse: the gradient of a function of the input's gradient, by every argument
    check(both(lambda conv: grad(lambda x_, w_, b_: grad(loss(conv))(x_, w_, b_).square().sum(),
                                 argnums=(0, 1, 2))(x, w, b)))
    # (here the incoming gradient depends on w apart from y: the ReLU gate's zeros must reach it)
    check(both(lambda conv: grad(lambda x_, w_, b_: grad(lambda u: (conv(u, w_, b_, *opts) * w_.mean()).sum())(x_)
                                 .square().sum(), argnums=(0, 1, 2))(x, w, b)))
    check(both(lambda conv: grad(lambda x_, w_, b_: grad(loss(conv), argnums=(1, 2))(x_, w_, b_)[0].sin().sum()
                                 + grad(loss(conv), argnums=2)(x_, w_, b_).square().sum(),
                                 argnums=(0, 1, 2))(x, w, b)))


def test_masked_conv2d_hessian_of_the_weights_stays_masked():
    gen = torch.Generator().manual_seed(9)
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64, generator=gen)
    w = torch.randn(2, 2, 3, 3, dtype=torch.float64, generator=gen)
    mask = pixelops.conv_mask(3, "B", dtype=torch.float64)
    ours = torch.func.hessian(lambda w_: pixelops.masked_conv2d(x, w_).pow(3).sum())(w)
    ref = torch.func.hessian(lambda w_: F.conv2d(x, w_ * mask, padding=1).pow(3).sum())(w)
    torch.testing.assert_close(ours, ref, **TOL)
    assert (ours[:, :, mask == 0] == 0).all() and (ours[..., mask == 0] == 0).all()


def test_relu_forward_mode_and_second_derivatives():
    gen = torch.Generator().manual_seed(10)
    x = torch.randn(3, 7, dtype=torch.float64, generator=gen)
    t = torch.randn(3, 7, dtype=torch.float64, generator=gen)
    for f in (lambda a: torch.func.jvp(a, (x,), (t,)),
              lambda a: torch.func.hessian(lambda z: ((a(z) + 0.5) ** 3).sum())(x),
              lambda a: grad(lambda z: grad(lambda u: ((a(u) + 0.5) ** 3 * u).sum())(z).square().sum())(x)):
        for o, r in zip(*(v if isinstance(v, tuple) else (v,) for v in (f(pixelops.relu), f(torch.relu)))):
            torch.testing.assert_close(o, r, **TOL)


def test_cross_entropy_refuses_forward_mode_and_second_derivatives():
    # no rules for them (the tangent of the gradient written in the forward needs the softmax's Jacobian):
    # a clear error, not a silently wrong derivative
    z = torch.randn(3, 4, dtype=torch.float64)
    t = torch.tensor([0, 3, 1])
    with pytest.raises(NotImplementedError, match="pixelops.cross_entropy: forward-mode"):
        torch.func.jvp(lambda a: pixelops.cross_entropy(a, t), (z,), (z,))
    with pytest.raises(NotImplementedError, match="pixelops.cross_entropy: .*hessian"):
        torch.func.hessian(lambda a: pixelops.cross_entropy(a, t))(z)
    with pytest.raises(NotImplementedError, match="pixelops.cross_entropy: second derivatives"):
        grad(lambda a: grad(lambda u: pixelops.cross_entropy(u, t))(a).square().sum())(z)


def test_class_probability_targets_needing_grad_are_refused_under_transforms():
    z = torch.randn(3, 4, dtype=torch.float64)
    p = torch.softmax(torch.randn(3, 4, dtype=torch.float64), 1)
    with pytest.raises(NotImplementedError, match="torch.func"):
        grad(lambda q: pixelops.cross_entropy(z, q))(p)


# ---- eager forward-mode AD, linearize, grad outside vmap, empty vmap batches (from a random search) ----------

@pytest.mark.parametrize("op", ["conv2d", "masked_conv2d", "relu"])
def test_eager_forward_ad_carries_the_tangent(op):
    import torch.autograd.forward_ad as fwad
    gen = torch.Generator().manual_seed(21)
    x, t = (torch.randn(2, 3, 7, 6, dtype=torch.float64, generator=gen) for _ in range(2))
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64, generator=gen)
    ours, ref = {
        "conv2d": (lambda v: pixelops.conv2d(v, w, None, 1, 1, activation="relu"),
                   lambda v: F.conv2d(v, w, None, 1, 1).relu()),
        "masked_conv2d": (lambda v: pixelops.masked_conv2d(v, w, mask_type="A"),
                          lambda v: F.conv2d(v, w * pixelops.conv_mask((3, 3), "A", dtype=w.dtype), None, 1, 1)),
        "relu": (pixelops.relu, torch.relu),
    }[op]
    with fwad.dual_level():
        got = fwad.unpack_dual(ours(fwad.make_dual(x, t)))
        want = fwad.unpack_dual(ref(fwad.make_dual(x, t)))
    assert got.tangent is not None  # (it was None: the eager path dropped it)
    torch.testing.assert_close(got.primal, want.primal, **TOL)
    torch.testing.assert_close(got.tangent, want.tangent, **TOL)


def test_forward_ad_where_pixelops_has_no_rule_raises():
    import torch.autograd.forward_ad as fwad
    x = torch.randn(3, 5, dtype=torch.float64)
    with fwad.dual_level():
        with pytest.raises(NotImplementedError, match="pixelops.cross_entropy"):
            pixelops.cross_entropy(fwad.make_dual(x, torch.randn_like(x)), torch.tensor([0, 4, 2]))
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    for f, name in ((lambda v: pixelops.conv2d(v, w), "pixelops.conv2d"), (pixelops.relu, "pixelops.relu")):
        with pytest.raises(NotImplementedError, match=name):  # its tangent would come out zero
            torch.func.linearize(f, torch.randn(1, 3, 5, 5, dtype=torch.float64))


def test_cross_entropy_gradient_through_vmap():
    gen = torch.Generator().manual_seed(22)
    xs = torch.randn(4, 3, 6, dtype=torch.float64, generator=gen)
    ts = torch.randint(0, 6, (4, 3), generator=gen)
    ours, ref = (grad(lambda v: vmap(loss)(v, ts).sum())(xs)  # vmap inside grad: the logits report no requires_grad
                 for loss in (pixelops.cross_entropy, F.cross_entropy))
    torch.testing.assert_close(ours, ref, **TOL)


def test_empty_vmap_batches():
    gen = torch.Generator().manual_seed(23)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64, generator=gen)
    ws = torch.randn(5, 4, 3, 3, 3, dtype=torch.float64, generator=gen)
    x0 = torch.randn(0, 3, 6, 6, dtype=torch.float64)
    for conv in (pixelops.conv2d, F.conv2d):  # (pixelops' died of a division by zero: groups * 0)
        jac = jacrev(lambda v: conv(v, w, None, 1, 1))(x0)
        over_w = vmap(lambda u: conv(x0, u, None, 1, 1))(ws)
        g = vmap(grad(lambda u, v: conv(v, u, None, 1, 1).sum()), in_dims=(0, None))(ws, x0)
        assert jac.shape == (0, 4, 6, 6, 0, 3, 6, 6) and over_w.shape == (5, 0, 4, 6, 6)
        assert g.shape == ws.shape and not g.any()
    losses = vmap(pixelops.cross_entropy)(torch.randn(0, 3, 6, dtype=torch.float64), torch.zeros(0, 3).long())
    assert losses.shape == (0,)
    # the kernels themselves refuse groups that do not divide the channels (here 0), with a clear error
    y = torch.empty(1, 4, 4, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="groups"):
        pixelops._C.conv2d_forward(torch.randn(1, 3, 6, 6, dtype=torch.float64), w, pixelops._arrays.ABSENT, y,
                                   1, 1, 0, 0, 1, 1, 0, 9, False, False, 0)


# ---- torch.func.functionalize: each op one level below it, as functorch runs torch's own functional ops ------

def _functionalize_case(name, device, gen):
    """(ours, torch's, arguments, which arguments are differentiable) for the case `name`, in float64."""
    def randn(*shape):
        return torch.randn(*shape, dtype=torch.float64, generator=gen).to(device)
    x, w, b = randn(2, 4, 7, 6), randn(6, 2, 3, 3), randn(6)
    mask = pixelops.conv_mask(3, "A", dtype=torch.float64, device=device)
    logits, target = randn(5, 4, 3), torch.randint(0, 4, (5, 3), generator=gen).to(device)
    return {
        "conv2d": (lambda x_, w_, b_: pixelops.conv2d(x_, w_, b_, 2, 1, 1, 2, activation="relu"),
                   lambda x_, w_, b_: F.conv2d(x_, w_, b_, 2, 1, 1, 2).relu(), (x, w, b), (0, 1, 2)),
        "conv2d unbatched": (lambda x_, w_: pixelops.conv2d(x_, w_, None, 1, "same", 2, 2),
                             lambda x_, w_: F.conv2d(x_, w_, None, 1, "same", 2, 2), (x[0], w), (0, 1)),
        "masked_conv2d": (lambda x_, w_, b_: pixelops.masked_conv2d(x_, w_, b_, "A", groups=2),
                          lambda x_, w_, b_: F.conv2d(x_, w_ * mask, b_, 1, 1, 1, 2), (x, w, b), (0, 1, 2)),
        "relu": (lambda x_: pixelops.relu(x_ * 1.5), lambda x_: torch.relu(x_ * 1.5), (x,), (0,)),
        "cross_entropy": (lambda z, t: pixelops.cross_entropy(z, t, label_smoothing=0.1),
                          lambda z, t: F.cross_entropy(z, t, label_smoothing=0.1), (logits, target), (0,)),
    }[name]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", ["conv2d", "conv2d unbatched", "masked_conv2d", "relu", "cross_entropy"])
def test_functionalize_matches_torch(device, case):
    # (functorch has no functionalize rule for autograd.Function: every op raised "NYI: Functionalize rule for
    # custom_function_call")
    from torch.func import functionalize
    gen = torch.Generator().manual_seed(30)
    ours, ref, args, argnums = _functionalize_case(case, device, gen)

    def loss(f):
        return lambda *a: (f(*a) + 0.25).pow(3).sum()  # not linear: the gradients depend on the values

    torch.testing.assert_close(functionalize(ours)(*args), ref(*args), **TOL)
    # .backward() through it (autograd records below functionalize), grad outside it, vmap outside it
    grads = []
    for f in (functionalize(loss(ours)), loss(ref)):
        leaves = [a.clone().requires_grad_(i in argnums) for i, a in enumerate(args)]
        f(*leaves).backward()
        grads.append([leaves[i].grad for i in argnums])
    for o, r in zip(*grads):
        torch.testing.assert_close(o, r, **TOL)
    for o, r in zip(grad(functionalize(loss(ours)), argnums=argnums)(*args), grad(loss(ref), argnums=argnums)(*args)):
        torch.testing.assert_close(o, r, **TOL)
    batched = [torch.stack([a, a.flip(0) if a.is_floating_point() else a]) for a in args]
    torch.testing.assert_close(vmap(functionalize(ours))(*batched), vmap(ref)(*batched), **TOL)
    for o, r in zip(vmap(grad(functionalize(loss(ours)), argnums=argnums))(*batched),
                    vmap(grad(loss(ref), argnums=argnums))(*batched)):
        torch.testing.assert_close(o, r, **TOL)


def test_functionalize_traced_keeps_the_custom_op():
    # make_fx(functionalize(f)) took (and takes) the custom op, which stays in the graph, eager under
    # functionalize gives the same values
    from torch.fx.experimental.proxy_tensor import make_fx
    from torch.func import functionalize
    x, w = torch.randn(1, 2, 5, 5, dtype=torch.float64), torch.randn(3, 2, 3, 3, dtype=torch.float64)

    def f(x_, w_):
        return pixelops.relu(pixelops.conv2d(x_, w_, None, 1, 1), inplace=True)

    code = make_fx(functionalize(f))(x, w).code
    assert "pixelops.conv2d" in code and "pixelops.relu" in code
    torch.testing.assert_close(functionalize(f)(x, w), F.conv2d(x, w, None, 1, 1).relu(), **TOL)


@pytest.mark.parametrize("device", DEVICES)
def test_functionalize_in_place_relu_as_torch(device):
    # relu(x, inplace=True) under functionalize writes what torch's relu_ does: the caller's tensor (an input,
    # or a view of one, with or without views removed), an intermediate whose gradient flows on
    from torch.func import functionalize
    gen = torch.Generator().manual_seed(40)
    x = torch.randn(4, 5, dtype=torch.float64, generator=gen).to(device)

    def on_input(relu):
        return lambda a: relu(a)

    def on_view(relu):
        def f(a):
            relu(a.view(-1)[3:])  # a view of the input: its base must see the write
            return a * 2
        return f

    def on_intermediate(relu):
        def f(a):
            c = a * 1.5 - 0.2
            relu(c)
            return (c + a).sin()
        return f

    ours, ref = (lambda a: pixelops.relu(a, inplace=True)), (lambda a: F.relu(a, inplace=True))
    for remove in ("mutations", "mutations_and_views"):
        for make in (on_input, on_view, on_intermediate):
            got, want = x.clone(), x.clone()
            out = functionalize(make(ours), remove=remove)(got)
            torch.testing.assert_close(out, make(ref)(want), **TOL)
            torch.testing.assert_close(got, want, **TOL)  # the caller's tensor written as torch's
    # gradients through the write, .backward() and grad (a copy_ into the wrapper became aten::copy, which
    # autograd cannot differentiate); a CPU bfloat16 tensor (computed in float32) too
    for v in ((x, x.to(torch.bfloat16)) if device == "cpu" else (x,)):
        grads = []
        for relu in (ours, ref):
            leaf = v.clone().requires_grad_()
            functionalize(on_intermediate(relu))(leaf).sum().backward()
            grads.append((leaf.grad, grad(lambda a: functionalize(on_intermediate(relu))(a).pow(2).sum())(v)))
        for o, r in zip(*grads):
            torch.testing.assert_close(o, r, **TOL)
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):  # as torch's relu_ there
        functionalize(on_input(ours))(x.clone().requires_grad_())


def test_functionalize_cross_entropy_inplace_backward_leaves_the_logits():
    # inplace_backward has no effect under functionalize (nor under torch.compile and the other transforms):
    # the logits keep their values, and the gradient is torch's
    from torch.func import functionalize
    gen = torch.Generator().manual_seed(41)
    x = torch.randn(6, 5, dtype=torch.float64, generator=gen)
    t = torch.randint(0, 5, (6,), generator=gen)

    def f(ce, **kw):
        def loss(a):
            z = a * 2
            return ce(z, t, **kw), z
        return loss

    results = []
    for g in (functionalize(f(pixelops.cross_entropy, inplace_backward=True)), f(F.cross_entropy)):
        leaf = x.clone().requires_grad_()
        loss, z = g(leaf)
        loss.backward()
        results.append((loss, z, leaf.grad))
    for o, r in zip(*results):
        torch.testing.assert_close(o, r, **TOL)
