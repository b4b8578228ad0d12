"""One training step (forward, backward, Adam) of train-mnist's CNN at batch 32 and 128: the torch.nn model
against the same model turned over to pixelops by pixelops.swap(), and by swap(fuse_relu=True) (each conv's
ReLU in its output write)."""
from __future__ import annotations

import copy

import torch

import pixelops

from .case import Case


def _step(model, loss_fn):
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def go(args):
        x, y = args
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss
    return go


def _case(batch, device, fuse_relu):
    from ..train_mnist import build_model

    theirs = build_model(0, device)
    ours = pixelops.swap(copy.deepcopy(theirs), verbose=False, fuse_relu=fuse_relu)

    def setup():
        return torch.rand(batch, 1, 28, 28, device=device), torch.randint(0, 10, (batch,), device=device)

    def error(args):  # the first step's loss from the same weights, against a float64 copy of the torch model
        x, y = args
        ref = copy.deepcopy(theirs).double()
        loss_ref = torch.nn.functional.cross_entropy(ref(x.double()), y)
        loss = pixelops.nn.CrossEntropyLoss()(copy.deepcopy(ours)(x), y)
        return abs(loss.item() - loss_ref.item()) / abs(loss_ref.item())

    name = "fwd+bwd+adam" + (", relu fused" if fuse_relu else "")
    return Case("train_step", name, f"mnist cnn, batch {batch}", device, setup,
                _step(theirs, torch.nn.CrossEntropyLoss()), _step(ours, pixelops.nn.CrossEntropyLoss()), error)


def cases(device):
    return [_case(batch, device, fuse) for fuse in (False, True) for batch in (32, 128)]
