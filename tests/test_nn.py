"""pixelops.nn modules, swap() and patch(): drop-ins that keep parameters, state_dicts and optimizers."""
import copy
import inspect

import pytest
import torch
import torch.nn.functional as F

import pixelops
import pixelops.nn as pnn
from nn_models import batch, small_cnn


def _train_steps(model, loss_fn, steps=3, lr=0.1):
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    losses = []
    for i in range(steps):
        x, y = batch(seed=10 + i, dtype=next(model.parameters()).dtype)
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


# ---- modules ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["Conv2d", "ReLU", "CrossEntropyLoss"])
def test_constructor_arguments_are_torchs(name):
    # names, order and defaults: code (or a config system reading signatures) that builds torch's module with
    # keywords or positions builds pixelops' the same way
    def params(cls):
        return [(p.name, p.default, p.kind) for p in inspect.signature(cls.__init__).parameters.values()]
    assert params(getattr(pnn, name)) == params(getattr(torch.nn, name))


def test_modules_are_torch_subclasses_with_torch_state_dict_keys():
    pairs = [
        (pnn.Conv2d(3, 5, 3, stride=2, padding=1, bias=False), torch.nn.Conv2d(3, 5, 3, stride=2, padding=1, bias=False)),
        (pnn.MaskedConv2d(3, 5, 3, mask_type="A"), torch.nn.Conv2d(3, 5, 3, padding="same")),
        (pnn.ReLU(inplace=True), torch.nn.ReLU(inplace=True)),
        (pnn.CrossEntropyLoss(weight=torch.rand(4), label_smoothing=0.1), torch.nn.CrossEntropyLoss(weight=torch.rand(4))),
    ]
    for ours, theirs in pairs:
        assert isinstance(ours, type(theirs))
        assert list(ours.state_dict()) == list(theirs.state_dict())
        assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
        ours.load_state_dict(theirs.state_dict())  # checkpoints move both ways


def test_conv2d_module_matches_torch_forward_and_backward():
    torch.manual_seed(0)
    theirs = torch.nn.Conv2d(3, 6, (3, 5), stride=(2, 1), padding=(1, 2), dilation=1, groups=3).double()
    ours = pnn.Conv2d(3, 6, (3, 5), stride=(2, 1), padding=(1, 2), dilation=1, groups=3).double()
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 3, 9, 11, dtype=torch.float64, requires_grad=True)
    y_ref, y = theirs(x), ours(x)
    torch.testing.assert_close(y, y_ref)
    g = torch.randn_like(y)
    torch.testing.assert_close(torch.autograd.grad(y, [x, ours.weight, ours.bias], g),
                               torch.autograd.grad(y_ref, [x, theirs.weight, theirs.bias], g))


def test_masked_conv2d_module_matches_masked_torch_conv():
    torch.manual_seed(0)
    ours = pnn.MaskedConv2d(2, 4, 5, mask_type="A").double()
    x = torch.randn(3, 2, 8, 7, dtype=torch.float64)
    mask = pixelops.conv_mask(5, "A", dtype=torch.float64)
    ref = F.conv2d(x, ours.weight * mask, ours.bias, padding="same")
    torch.testing.assert_close(ours(x), ref)
    assert "mask_type='A'" in repr(ours)


def test_relu_and_cross_entropy_modules_match_torch():
    x = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0, 4, 2, -100, 1, 3])
    w = torch.rand(5, dtype=torch.float64) + 0.5
    for kw in [{}, dict(reduction="sum"), dict(reduction="none", label_smoothing=0.2), dict(weight=w)]:
        torch.testing.assert_close(pnn.CrossEntropyLoss(**kw)(x, t), torch.nn.CrossEntropyLoss(**kw)(x, t))
    torch.testing.assert_close(pnn.ReLU()(x), torch.relu(x))


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
@pytest.mark.parametrize("padding", [(1, 2), "same"])
def test_conv_module_padding_modes_match_torch(mode, padding):
    torch.manual_seed(4)
    ref = torch.nn.Conv2d(3, 5, (3, 4), padding=padding, padding_mode=mode, dtype=torch.float64)
    ours = pnn.Conv2d(3, 5, (3, 4), padding=padding, padding_mode=mode, dtype=torch.float64)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 7, 9, dtype=torch.float64)
    torch.testing.assert_close(ours(x), ref(x))
    # read at each call, as torch's: set after construction, it holds
    ref.padding_mode = ours.padding_mode = "zeros"
    torch.testing.assert_close(ours(x), ref(x))


def test_masked_conv_module_refuses_what_a_mask_cannot_take():
    with pytest.raises(ValueError, match="padding_mode='reflect'"):
        pnn.MaskedConv2d(1, 1, 3, padding_mode="reflect")
    m = pnn.MaskedConv2d(1, 1, 3)
    m.padding_mode = "reflect"  # set later: refused at the call, not silently zero-padded
    with pytest.raises(ValueError, match="padding_mode='reflect'"):
        m(torch.randn(1, 1, 5, 5))
    with pytest.raises(ValueError, match="'mask_type'"):
        pnn.MaskedConv2d(1, 1, 3, mask_type="C")
    with pytest.raises(ValueError, match="odd 'kernel_size'"):  # at construction, not at the first forward
        pnn.MaskedConv2d(1, 1, (3, 2))


# ---- swap ----------------------------------------------------------------------------------------------

def test_swap_keeps_parameters_and_the_optimizer_steps_them():
    reference = small_cnn()
    model = small_cnn()
    params = list(model.parameters())
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    assert pixelops.swap(model, verbose=False) is model
    assert all(a is b for a, b in zip(params, model.parameters()))
    assert type(model[0]) is pnn.Conv2d and type(model[1]) is pnn.ReLU and type(model[3]) is pnn.ReLU
    assert "pixelops.Conv2d(1, 4" in repr(model) and "(5): Linear" in repr(model)
    before = [p.detach().clone() for p in params]
    ref_opt = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9)
    for i in range(3):
        x, y = batch(seed=i)
        for m, o, fn in ((model, opt, pnn.CrossEntropyLoss()), (reference, ref_opt, torch.nn.CrossEntropyLoss())):
            o.zero_grad()
            fn(m(x), y).backward()
            o.step()
    assert all(not torch.equal(b, p) for b, p in zip(before, params))  # the old optimizer moved them
    for p, q in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)


def test_swap_reports_what_it_left_and_why(capsys):
    class MyConv(torch.nn.Conv2d):
        pass

    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 2, 3, padding=1, padding_mode="reflect"),  # swapped: padded by F.pad first
        MyConv(2, 2, 1),
        torch.nn.Conv2d(2, 2, 1).half(),  # no float16 kernels on the CPU
        torch.nn.ReLU(),
        torch.nn.CrossEntropyLoss(),
        pnn.MaskedConv2d(2, 2, 3),  # pixelops already: neither swapped nor reported
    )
    pixelops.swap(model)
    report = model.pixelops_swap_report
    assert [name for name, *_ in report.swapped] == ["0", "3", "4"]
    left = {name: why for name, _, why in report.left}
    assert set(left) == {"1", "2"}
    assert "subclass" in left["1"]
    assert "float16" in left["2"]
    assert type(model[0]) is pnn.Conv2d and type(model[1]) is MyConv
    err = capsys.readouterr().err
    assert "3 module(s) swapped, 2 left" in err and "float16" in err


def _fusable_model():
    torch.manual_seed(3)
    return torch.nn.Sequential(
        torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.ReLU(),                 # fused
        torch.nn.Conv2d(4, 4, 3, padding=1, bias=False), torch.nn.ReLU(inplace=True),  # fused, no bias
        torch.nn.MaxPool2d(2), torch.nn.ReLU(),                              # after a pool: left alone
        torch.nn.Sequential(pnn.MaskedConv2d(4, 3, 3, mask_type="B"), torch.nn.ReLU()),  # nested, masked: fused
        torch.nn.Conv2d(3, 3, 1),                                             # last: nothing to fuse
    ).double()


def test_swap_fuse_relu_moves_each_conv_relu_pair_into_the_conv():
    reference = _fusable_model()
    model = pixelops.swap(_fusable_model(), verbose=False, fuse_relu=True)
    report = model.pixelops_swap_report
    assert report.fused == [("0", "1"), ("2", "3"), ("6.0", "6.1")]
    assert [type(model[i]) for i in (1, 3, 5)] == [pnn.FusedReLU, pnn.FusedReLU, pnn.ReLU]
    assert model[0].activation == "relu" and model[7].activation is None and model[6][0].activation == "relu"
    assert isinstance(model[1], torch.nn.ReLU) and list(model.state_dict()) == list(reference.state_dict())
    assert "activation='relu'" in repr(model[0]) and "fused" in str(report)
    # forward and every gradient as the unfused torch model's (inputs far from zero and near it alike)
    x = torch.randn(2, 2, 8, 9, dtype=torch.float64, requires_grad=True)
    y, y_ref = model(x), reference(x)
    torch.testing.assert_close(y, y_ref)
    g = torch.randn_like(y)
    got = torch.autograd.grad(y, [x, *model.parameters()], g)
    ref = torch.autograd.grad(y_ref, [x, *reference.parameters()], g)
    for a, r in zip(got, ref):
        torch.testing.assert_close(a, r)
    # swapping again changes nothing
    pixelops.swap(model, verbose=False, fuse_relu=True)
    assert model.pixelops_swap_report.fused == [] and model[0].activation == "relu"


def test_swap_fuse_relu_leaves_sequentials_with_their_own_forward_alone():
    class Residual(torch.nn.Sequential):  # uses the conv's output twice: its ReLU cannot move into the conv
        def forward(self, x):
            h = self[0](x)
            return self[1](h) + h

    model = torch.nn.Sequential(Residual(torch.nn.Conv2d(2, 2, 3, padding=1), torch.nn.ReLU())).double()
    reference = copy.deepcopy(model)
    pixelops.swap(model, verbose=False, fuse_relu=True)
    assert model.pixelops_swap_report.fused == [] and type(model[0][1]) is pnn.ReLU
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64)
    torch.testing.assert_close(model(x), reference(x))


def test_swap_fuse_relu_leaves_a_sequential_with_a_forward_of_its_own_instance_alone():
    seq = torch.nn.Sequential(torch.nn.Conv2d(2, 2, 3, padding=1), torch.nn.ReLU()).double()
    seq.forward = lambda x: seq[1](seq[0](x)) + seq[0](x)  # the conv's output used past the ReLU too
    reference = copy.deepcopy(seq)
    reference.forward = lambda x: reference[1](reference[0](x)) + reference[0](x)
    pixelops.swap(seq, verbose=False, fuse_relu=True)
    assert seq.pixelops_swap_report.fused == []
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64)
    torch.testing.assert_close(seq(x), reference(x))


def test_swap_fuse_relu_leaves_shared_modules_apart():
    torch.manual_seed(0)
    relu, conv = torch.nn.ReLU(), torch.nn.Conv2d(2, 2, 3, padding=1)
    # one ReLU after two convs (the second pair must stay rectified), and a conv also used without a ReLU
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 2, 3, padding=1), relu, torch.nn.Conv2d(2, 2, 3, padding=1),
                                relu, conv, torch.nn.ReLU(), conv).double()
    reference = copy.deepcopy(model)
    pixelops.swap(model, verbose=False, fuse_relu=True)
    assert model.pixelops_swap_report.fused == []
    assert sum("more than one place" in why for *_, why in model.pixelops_swap_report.left) == 3
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64)
    torch.testing.assert_close(model(x), reference(x))


def test_swap_fuse_relu_leaves_hooked_pairs_apart():
    model = _fusable_model()
    seen = []
    model[1].register_forward_hook(lambda m, i, o: seen.append(i[0].min().item()))
    pixelops.swap(model, verbose=False, fuse_relu=True)
    assert type(model[1]) is pnn.ReLU and model[0].activation is None
    assert ("0", "1") not in model.pixelops_swap_report.fused
    assert any("hooks" in why for name, _, why in model.pixelops_swap_report.left if name == "1")
    model(torch.randn(1, 2, 6, 6, dtype=torch.float64))
    assert seen and seen[0] < 0  # the hook still sees the conv's output before the ReLU


def test_swap_fuse_relu_leaves_pairs_apart_under_a_hook_on_every_module():
    model = _fusable_model()
    seen = {}
    handle = torch.nn.modules.module.register_module_forward_hook(
        lambda m, i, o: seen.__setitem__(id(m), o.min().item()))
    try:
        pixelops.swap(model, verbose=False, fuse_relu=True)
        assert type(model[1]) is pnn.ReLU and model[0].activation is None
        assert any("hooks" in why for name, _, why in model.pixelops_swap_report.left if name == "1")
        model(torch.randn(1, 2, 6, 6, dtype=torch.float64))
    finally:
        handle.remove()
    assert seen[id(model[0])] < 0  # the conv's own output, before the ReLU


def test_swap_again_after_a_fused_conv_is_replaced_fuses_anew():
    torch.manual_seed(3)
    model = _fusable_model()
    pixelops.swap(model, verbose=False, fuse_relu=True)
    assert type(model[1]) is pnn.FusedReLU
    new = torch.nn.Conv2d(2, 4, 5, padding=2, dtype=torch.float64)  # model surgery: a new first layer
    model[0] = new
    reference = copy.deepcopy(model)
    reference[1] = torch.nn.ReLU()
    pixelops.swap(model, verbose=False, fuse_relu=True)
    assert model[0] is new and new.activation == "relu" and type(model[1]) is pnn.FusedReLU
    assert ("0", "1") in model.pixelops_swap_report.fused
    x = torch.randn(2, 2, 8, 6, dtype=torch.float64)
    torch.testing.assert_close(model(x), reference(x))
    # a FusedReLU with no fused conv before it (taken out of its model) turns back into a ReLU
    lone = torch.nn.Sequential(pixelops.swap(_fusable_model(), verbose=False, fuse_relu=True)[1])
    assert type(lone[0]) is pnn.FusedReLU
    pixelops.swap(lone, verbose=False)  # (any swap: fuse_relu or not)
    assert type(lone[0]) is pnn.ReLU
    torch.testing.assert_close(lone(x), torch.relu(x))


def test_swap_leaves_a_parametrized_pixelops_conv_unreported():
    model = pixelops.swap(torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3)), verbose=False)
    torch.nn.utils.parametrizations.weight_norm(model[0])  # a subclass of pixelops' Conv2d, running pixelops
    pixelops.swap(model, verbose=False)
    assert isinstance(model[0], pnn.Conv2d) and not model.pixelops_swap_report.left


def test_swap_a_bare_module_and_state_dict_round_trip():
    conv = torch.nn.Conv2d(2, 3, 3)
    sd = copy.deepcopy(conv.state_dict())
    assert type(pixelops.swap(conv, verbose=False)) is pnn.Conv2d
    assert conv.state_dict().keys() == sd.keys()
    torch.save(conv.state_dict(), "/dev/null")


# ---- patch ---------------------------------------------------------------------------------------------

def test_patch_points_functionals_at_pixelops_and_restores_them():
    originals = (F.conv2d, F.relu, F.cross_entropy)
    calls = []
    real_relu = pixelops.relu
    with pixelops.patch():
        assert pnn.is_patched()
        assert (F.conv2d, F.relu, F.cross_entropy) != originals
        x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
        w = torch.randn(4, 3, 3, 3, dtype=torch.float64)
        torch.testing.assert_close(F.conv2d(x, w, None, 1, 1), originals[0](x, w, None, 1, 1))
        t = torch.tensor([1, 0])
        logits = torch.randn(2, 4, dtype=torch.float64)
        torch.testing.assert_close(F.cross_entropy(logits, t, label_smoothing=0.1),
                                   originals[2](logits, t, label_smoothing=0.1))
        # torch.nn modules call the functionals too
        pixelops.relu = lambda *a, **k: calls.append(1) or real_relu(*a, **k)
        try:
            torch.nn.ReLU()(x)
        finally:
            pixelops.relu = real_relu
        assert calls == [1]
        # what pixelops has no kernels for goes to torch: probabilities as targets, CPU float16
        probs = torch.softmax(torch.randn(2, 4, dtype=torch.float64), 1)
        torch.testing.assert_close(F.cross_entropy(logits, probs), originals[2](logits, probs))
        assert F.relu(torch.randn(4).half()).dtype == torch.float16
        xb, wb = x.to(torch.bfloat16), w.to(torch.bfloat16)  # no CPU bfloat16 kernels, no autocast: torch's
        torch.testing.assert_close(F.conv2d(xb, wb, None, 1, 1), originals[0](xb, wb, None, 1, 1))
        with torch.autocast("cpu", dtype=torch.bfloat16):  # under autocast pixelops takes them (as float32 work)
            assert F.conv2d(xb, wb, None, 1, 1).dtype == torch.bfloat16
    assert (F.conv2d, F.relu, F.cross_entropy) == originals
    assert not pnn.is_patched()


def test_patch_restores_after_exception_and_without_with():
    originals = (F.conv2d, F.relu, F.cross_entropy)
    with pytest.raises(KeyError):
        with pixelops.patch():
            with pixelops.patch():  # nested
                raise KeyError
    assert (F.conv2d, F.relu, F.cross_entropy) == originals
    p = pixelops.patch()
    assert F.relu is not originals[1]
    p.restore()
    assert (F.conv2d, F.relu, F.cross_entropy) == originals
    pixelops.patch()
    pixelops.unpatch()
    assert (F.conv2d, F.relu, F.cross_entropy) == originals


def test_unpatch_ends_every_patch_made_before_it():
    originals = (F.conv2d, F.relu, F.cross_entropy)
    with pixelops.patch():
        pixelops.unpatch()
    assert (F.conv2d, F.relu, F.cross_entropy) == originals
    with pixelops.patch():  # the block above left the count right: patching still works
        assert pixelops.nn.is_patched() and F.relu is not originals[1]
    assert not pixelops.nn.is_patched()
    stale = pixelops.patch()
    pixelops.unpatch()
    current = pixelops.patch()
    stale.restore()  # ended by unpatch(): must not undo `current`
    assert pixelops.nn.is_patched() and F.relu is not originals[1]
    current.restore()
    assert (F.conv2d, F.relu, F.cross_entropy) == originals


def test_a_patched_function_kept_past_its_patch_is_torchs_again():
    calls = []
    real_relu = pixelops.relu
    with pixelops.patch():
        kept = F.relu  # a module built inside the block that stores the functional
    pixelops.relu = lambda *a, **k: calls.append(1) or real_relu(*a, **k)
    try:
        x = torch.randn(3, 4, dtype=torch.float64)
        torch.testing.assert_close(kept(x), torch.relu(x))
        with pixelops.patch():
            F.relu(x)  # the patch in force runs pixelops
            kept(x)    # the ended one's function does not, even under another patch
    finally:
        pixelops.relu = real_relu
    assert calls == [1]


def test_patch_leaves_a_function_set_over_it_in_place():
    original = F.relu

    def theirs(*args, **kwargs):
        return original(*args, **kwargs)

    try:
        with pixelops.patch():
            F.relu = theirs  # someone else's patch, made while pixelops' is in force
        assert F.relu is theirs
    finally:
        F.relu = original


def test_patched_training_matches_torch():
    ref = _train_steps(small_cnn(), F.cross_entropy)
    with pixelops.patch():
        ours = _train_steps(small_cnn(), F.cross_entropy)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("probs", [False, True])
def test_cross_entropy_loss_takes_half_logits_on_cpu(dtype, probs):
    # as torch.nn.CrossEntropyLoss does (a bfloat16 model's logits): computed in float32, the loss rounded back
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(6, 5, generator=gen).to(dtype).requires_grad_()
    t = torch.softmax(torch.randn(6, 5, generator=gen), 1).to(dtype) if probs else torch.randint(0, 5, (6,), generator=gen)
    w = (torch.rand(5, generator=gen) + 0.5).to(dtype)
    loss = pnn.CrossEntropyLoss(weight=w, label_smoothing=0.1)(x, t)
    loss.backward()
    xr = x.detach().double().requires_grad_()
    ref = F.cross_entropy(xr, t.double() if probs else t, weight=w.double(), label_smoothing=0.1)
    ref.backward()
    assert loss.dtype == dtype and x.grad.dtype == dtype
    torch.testing.assert_close(loss.double(), ref, rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(x.grad.double(), xr.grad, rtol=2e-2, atol=2e-3)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("target_dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_cross_entropy_loss_promotes_half_logits_with_other_probabilities_on_cpu(dtype, target_dtype):
    # pixelops.nn.functional's cross_entropy, called directly (the drop-in table sends such pairs to torch), on
    # CPU half logits with class probabilities of another dtype: the loss in torch's promoted dtype (float64
    # probabilities give a float64 loss, not one rounded to the logits' dtype)
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(7, 5, generator=gen).to(dtype).requires_grad_()
    t = torch.softmax(3 * torch.randn(7, 5, generator=gen), 1).to(target_dtype)
    loss = pnn.functional.cross_entropy(x, t, label_smoothing=0.1)
    assert loss.dtype == F.cross_entropy(x.detach(), t, label_smoothing=0.1).dtype
    loss.backward()
    xr = x.detach().double().requires_grad_()
    ref = F.cross_entropy(xr, t.double(), label_smoothing=0.1)
    ref.backward()
    assert x.grad.dtype == dtype
    torch.testing.assert_close(loss.double(), ref, rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(x.grad.double(), xr.grad, rtol=2e-2, atol=2e-3)


def test_modules_run_torch_where_pixelops_has_no_kernels():
    # a swapped model keeps taking what it took before the swap: calls pixelops has no kernels for run torch's
    # own forward (the drop-in table's rule, as under patch())
    torch.manual_seed(5)
    conv = torch.nn.Conv2d(3, 4, 3, padding=1).half()  # CPU float16, outside autocast
    reference = copy.deepcopy(conv)
    conv.__class__ = pnn.Conv2d
    conv.activation = "relu"  # as fuse_relu leaves it
    x = torch.randn(2, 3, 6, 6).half()
    assert torch.equal(conv(x), torch.relu(reference(x)))
    masked = pnn.MaskedConv2d(3, 4, 3).half()
    mask = pixelops.conv_mask(3, "B", dtype=torch.float16)
    assert torch.equal(masked(x), F.conv2d(x, masked.weight * mask, masked.bias, padding=1))
    assert torch.equal(pnn.ReLU()(torch.tensor([-3, 2])), torch.tensor([0, 2]))  # integers
    meta = pnn.Conv2d(3, 4, 3).to("meta")
    assert meta(torch.empty(1, 3, 5, 5, device="meta")).shape == (1, 4, 3, 3)
    logits, probs = torch.randn(4, 5), torch.softmax(torch.randn(4, 5, dtype=torch.float64), 1)
    torch.testing.assert_close(pnn.CrossEntropyLoss()(logits, probs), torch.nn.CrossEntropyLoss()(logits, probs))
    with pixelops.patch():  # no input channels: torch's answer, not pixelops' refusal
        empty = F.conv2d(torch.randn(1, 0, 5, 5), torch.randn(2, 0, 1, 1))
    assert empty.shape == F.conv2d(torch.randn(1, 0, 5, 5), torch.randn(2, 0, 1, 1)).shape


def test_swap_leaves_a_module_with_a_forward_set_on_the_instance():
    # a wrapper set on the instance calls the forward it wrapped (torch's): swapping the class under it would
    # only mislead the report, and fusing its ReLU into it would drop the ReLU
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 1)).double()
    wrapped = model[0].forward
    model[0].forward = lambda x: wrapped(x)
    reference = copy.deepcopy(model)
    pixelops.swap(model, verbose=False, fuse_relu=True)
    left = {name: why for name, _, why in model.pixelops_swap_report.left}
    assert "instance" in left["0"] and type(model[0]) is torch.nn.Conv2d
    assert model.pixelops_swap_report.fused == []
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    torch.testing.assert_close(model(x), reference(x))


def test_fx_symbolic_trace_of_a_swapped_model():
    # FX's proxies are not tensors: the modules hand them to torch's forward (the traced graph then holds
    # torch's ops), where the drop-in rule asked a proxy for its shape and failed
    model = pixelops.swap(small_cnn(), verbose=False)
    traced = torch.fx.symbolic_trace(model)
    x, _ = batch()
    torch.testing.assert_close(traced(x), model(x), rtol=1e-5, atol=1e-6)
    with pixelops.patch():
        torch.testing.assert_close(torch.fx.symbolic_trace(small_cnn())(x), small_cnn()(x), rtol=1e-5, atol=1e-6)


def test_swap_names_a_model_that_is_not_a_module():
    with pytest.raises(TypeError, match="'model' must be a torch.nn.Module, got NoneType"):
        pixelops.swap(None)


def test_swapped_modules_send_arrays_of_more_than_eight_dimensions_to_torch():
    x = torch.randn([2, 3] + [2] * 7, dtype=torch.float64)  # 9 dimensions: more than the kernels describe
    relu = pixelops.swap(torch.nn.ReLU(), verbose=False)
    torch.testing.assert_close(relu(x), torch.relu(x))
    t = torch.randint(0, 3, [2] + [2] * 7)
    loss = pixelops.swap(torch.nn.CrossEntropyLoss(), verbose=False)
    torch.testing.assert_close(loss(x, t), F.cross_entropy(x, t))
    with pytest.raises(ValueError, match="at most 8"):  # the ops themselves refuse them by name
        pixelops.relu(x)


def test_patched_cross_entropy_sends_class_weights_of_another_dtype_to_torch():
    gen = torch.Generator().manual_seed(24)
    logits = torch.randn(4, 5, generator=gen, requires_grad=True)
    probs = torch.softmax(torch.randn(4, 5, generator=gen), 1)
    w64 = torch.rand(5, dtype=torch.float64, generator=gen) + 0.5
    want = F.cross_entropy(logits, probs, weight=w64)  # torch promotes: a float64 loss
    with pixelops.patch():
        got = F.cross_entropy(logits, probs, weight=w64)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)
    loss = pixelops.swap(torch.nn.CrossEntropyLoss(weight=w64), verbose=False)
    torch.testing.assert_close(loss(logits, probs), want, rtol=1e-12, atol=0)
    # under CPU autocast, half logits and float32 weights are one dtype to cross-entropy: pixelops takes them
    from pixelops.nn.dropins import _cross_entropy_tensors
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert _cross_entropy_tensors(logits.bfloat16(), torch.tensor([0, 1, 2, 3]), w64.float()) is not None
