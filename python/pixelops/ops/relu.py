"""pixelops.relu: torch.nn.functional.relu on pixelops' kernels."""
from __future__ import annotations

import numpy as np

from .. import _C
from .._arrays import check_float, view
from .._torch_loader import torch_is_loaded, torch_ops


def relu(input, inplace: bool = False):
    """max(input, 0) element-wise, as ``torch.nn.functional.relu``.

    numpy array in, numpy array out (CPU, float32/float64); torch tensor in, torch tensor out (CPU: float32,
    float64, and float16/bfloat16 computed in float32, as CPU autocast's conv outputs come; CUDA: float32,
    float16, bfloat16, float64), differentiable through pixelops' backward kernel.
    ``inplace=True`` writes the result into ``input`` and returns it. Any strides are accepted.
    """
    if not isinstance(input, np.ndarray):
        if not torch_is_loaded():  # then it cannot be a tensor
            check_float(input, "input", "relu")
        return torch_ops("relu").relu(input, inplace)  # checks there, on the fast path
    check_float(input, "input", "relu")
    if inplace:
        if not input.flags.writeable:
            raise ValueError("pixelops.relu: 'input' is read-only, so inplace=True cannot write into it")
        out = input
    else:
        out = np.empty_like(input)
    _C.relu_forward(view(input), view(out), 0)
    return out
