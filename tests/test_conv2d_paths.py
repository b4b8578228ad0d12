"""conv2d CPU paths added for speed (eager autograd builder, backward blocking for small-channel layers):
each checked against torch in float64 on awkward shapes."""
import pytest
import torch
import torch.nn.functional as F

import pixelops


def _rand(*shape, seed):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen, dtype=torch.float64)


def test_create_graph_first_order_then_loud_second_order():
    # create_graph=True sends the eager backward through the pixelops::conv2d_backward custom op (tuples of
    # stride/padding from the eager path): the gradient must match, and a second derivative must fail loudly.
    x, w = _rand(2, 3, 7, 6, seed=1).requires_grad_(), _rand(4, 3, 3, 3, seed=2).requires_grad_()
    y = pixelops.conv2d(x, w, padding=(1, 2), stride=(2, 1))
    gx, gw = torch.autograd.grad((y * y).sum(), (x, w), create_graph=True)
    xr, wr = x.detach().requires_grad_(), w.detach().requires_grad_()
    yr = F.conv2d(xr, wr, padding=(1, 2), stride=(2, 1))
    rx, rw = torch.autograd.grad((yr * yr).sum(), (xr, wr))
    torch.testing.assert_close(gx, rx, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gw, rw, rtol=1e-10, atol=1e-12)
    with pytest.raises(RuntimeError, match="conv2d_backward"):
        gx.sum().backward()
