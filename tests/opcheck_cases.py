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
