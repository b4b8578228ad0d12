"""The table of torch.library.opcheck cases: every pixelops:: custom op needs at least one entry here
(test_torch_library.py fails for an op without one). Each case builds (args, kwargs) for one call of the op:
random values of awkward sizes, never zeros, with requires_grad where the op is differentiable.
"""
import torch

CASES: dict = {}


def case(op_name):
    """Adds the decorated function as an opcheck case of pixelops::<op_name>."""
    def register(make):
        CASES.setdefault(op_name, []).append(make)
        return make
    return register


def _randn(*shape, dtype=torch.float64, grad=False):
    return torch.randn(*shape, dtype=dtype).requires_grad_(grad)


@case("relu")
def _relu_2d():
    return (_randn(7, 13, grad=True),), {}


@case("relu")
def _relu_transposed_float32():
    return (_randn(5, 9, dtype=torch.float32, grad=True).t(),), {}


@case("relu_backward")
def _relu_backward():
    y = torch.relu(_randn(6, 11))
    return (y, _randn(6, 11)), {}


# conv2d(x, w, b, stride, padding (top, bottom, left, right), dilation, groups, ntaps, relu, tf32)
@case("conv2d")
def _conv2d_strided_grouped_relu():
    return (_randn(2, 4, 7, 6, grad=True), _randn(6, 2, 3, 3, grad=True), _randn(6, grad=True),
            [2, 1], [1, 1, 0, 0], [1, 1], 2, 9, True, False), {}


@case("conv2d")
def _conv2d_masked_taps_no_bias_dilated():
    return (_randn(1, 3, 9, 8, grad=True), _randn(5, 3, 3, 3, grad=True), None,
            [1, 1], [2, 2, 2, 2], [2, 2], 1, 5, False, False), {}


@case("conv2d_backward")
def _conv2d_backward():
    x, w = _randn(2, 3, 6, 5), _randn(4, 3, 3, 3)
    y = torch.relu(torch.nn.functional.conv2d(x, w, padding=1))
    return (x, w, y, _randn(*y.shape), [1, 1], [1, 1, 1, 1], [1, 1], 1, 9, True, False, [True, True, True]), {}


# cross_entropy(input, target, weight, ignore_index, reduction (0 none, 1 mean, 2 sum), label_smoothing, need_grad)
@case("cross_entropy")
def _cross_entropy_spatial_weighted():
    t = torch.randint(0, 5, (3, 4))
    t[0, 1] = 2
    return (_randn(3, 5, 4, grad=True), t, torch.rand(5, dtype=torch.float64) + 0.5, 2, 1, 0.1, True), {}


@case("cross_entropy")
def _cross_entropy_probabilities_none():
    probs = torch.softmax(_randn(6, 7), 1)
    return (_randn(6, 7, grad=True), probs, None, -100, 0, 0.0, True), {}


@case("cross_entropy_backward")
def _cross_entropy_backward():
    return (_randn(4, 6, 3), _randn(4, 3), 0), {}


@case("cross_entropy_backward")
def _cross_entropy_backward_scalar_mean():
    # 'mean' / 'sum' send one number back for every row: a 0-d gradient, read as an (N, S) view of zero strides
    return (_randn(5, 7, 2), torch.randn((), dtype=torch.float64), 1), {}


@case("cross_entropy")
def _cross_entropy_uint8_sum_no_grad():
    return (_randn(4, 256, 3), torch.randint(0, 256, (4, 3), dtype=torch.uint8), None, -100, 2, 0.0, False), {}
