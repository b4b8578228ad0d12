"""numpy arrays in, as every op takes them: the layouts numpy has and torch does not (byte-swapped values, fields
of structured arrays) are refused with the argument named, where the kernels would read them wrong; the other
views numpy makes (Fortran order, zero strides, read-only memory) read the same values as a contiguous copy."""
import numpy as np
import pytest

import pixelops

rng = np.random.default_rng(0)
X = rng.standard_normal((2, 3, 6, 7))
W = rng.standard_normal((4, 3, 3, 3))
B = rng.standard_normal(4)
LOGITS = rng.standard_normal((5, 4))
TARGET = rng.integers(0, 4, 5)


def _swapped(a):
    return a.astype(a.dtype.newbyteorder("S"))


def _field(a):
    """a's values as the first field of a structured array: strides of 12 bytes for 8-byte floats."""
    s = np.zeros(a.shape, dtype=[("v", a.dtype), ("pad", np.float32)])
    s["v"] = a
    return s["v"]


CALLS = {  # (op, argument) -> call with that argument replaced
    ("conv2d", "input"): lambda a: pixelops.conv2d(a(X), W, B, padding=1),
    ("conv2d", "weight"): lambda a: pixelops.conv2d(X, a(W), B, padding=1),
    ("conv2d", "bias"): lambda a: pixelops.conv2d(X, W, a(B), padding=1),
    ("masked_conv2d", "input"): lambda a: pixelops.masked_conv2d(a(X), W, B, "B"),
    ("relu", "input"): lambda a: pixelops.relu(a(X)),
    ("cross_entropy", "input"): lambda a: pixelops.cross_entropy(a(LOGITS), TARGET),
    ("cross_entropy", "target"): lambda a: pixelops.cross_entropy(LOGITS, a(TARGET)),
    ("cross_entropy", "weight"): lambda a: pixelops.cross_entropy(LOGITS, TARGET, weight=a(np.ones(4))),
}


@pytest.mark.parametrize("op,name", list(CALLS), ids=[f"{o}-{n}" for o, n in CALLS])
def test_byte_swapped_array_is_refused(op, name):
    with pytest.raises(TypeError, match=rf"pixelops\.{op}: '{name}' has dtype .*byte order is not this machine's"):
        CALLS[op, name](_swapped)


@pytest.mark.parametrize("op,name", list(CALLS), ids=[f"{o}-{n}" for o, n in CALLS])
def test_field_of_structured_array_is_refused(op, name):
    # (before, relu read such a field's bytes as if its values were packed: silent garbage; and conv2d did so
    # once a contiguous array of the same shape and dtype had been through its cache of checked calls)
    CALLS[op, name](lambda a: np.ascontiguousarray(_field(a)))
    with pytest.raises(ValueError, match=rf"pixelops\.{op}: '{name}' has strides .* not whole"):
        CALLS[op, name](_field)


@pytest.mark.parametrize("op", [pixelops.conv2d, pixelops.masked_conv2d])
def test_conv_batch_of_zero(op):
    # numpy gives an empty batch strides of 0: still a dense array (the kernels refused it as not contiguous)
    out = op(np.zeros((0, 3, 6, 7)), W, B, padding=1)
    assert isinstance(out, np.ndarray) and out.shape == (0, 4, 6, 7)


@pytest.mark.parametrize("kind", ["fortran", "zero_strides", "read_only", "reversed"])
@pytest.mark.parametrize("op,name", list(CALLS), ids=[f"{o}-{n}" for o, n in CALLS])
def test_numpy_views_read_as_copies(op, name, kind):
    def make(a):
        if kind == "fortran":
            return np.asfortranarray(a)
        if kind == "zero_strides":  # every entry along the first axis is the first one's
            return np.broadcast_to(a[:1], a.shape)
        if kind == "read_only":
            r = a.copy()
            r.flags.writeable = False
            return r
        return np.ascontiguousarray(a[::-1])[::-1]  # the same values through negative strides

    def copy(a):
        return np.ascontiguousarray(make(a))

    ours, ref = CALLS[op, name](make), CALLS[op, name](copy)
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-12)


def test_numpy_subclasses_and_too_many_dimensions_are_refused_by_name():
    with pytest.raises(TypeError, match=r"pixelops\.cross_entropy: 'input' must be a numpy array, got matrix"):
        pixelops.cross_entropy(np.matrix(LOGITS), TARGET)  # (before: an internal "(N, C, S) view" error)
    with pytest.raises(ValueError, match=r"pixelops\.relu: 'input' has 9 dimensions; pixelops takes at most 8"):
        pixelops.relu(np.ones((1,) * 8 + (3,)))


def test_numpy_conv_output_too_large_and_bad_mask_dtype_name_the_op():
    with pytest.raises((ValueError, MemoryError), match=r"pixelops\.conv2d: the output.*'padding'"):
        pixelops.conv2d(np.ones((1, 1, 2, 2)), np.ones((1, 1, 1, 1)), padding=2 ** 31 - 1)
    for dtype in ("foo", 1.5, object, "U3"):
        with pytest.raises(TypeError, match=r"pixelops\.conv_mask: 'dtype'"):
            pixelops.conv_mask(3, dtype=dtype)
    assert pixelops.conv_mask(3, dtype=np.int8).dtype == np.int8
