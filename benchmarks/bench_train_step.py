"""One training step of train-mnist's CNN (forward, backward, Adam): torch.nn against pixelops.swap()
(pytest benchmarks/bench_train_step.py)."""
import copy

import pytest
import torch

import pixelops
from conftest import sync
from pixelops.train_mnist import build_model


@pytest.mark.parametrize("impl", ["torch", "pixelops"])
@pytest.mark.parametrize("batch", [32, 128])
def test_train_step(benchmark, device, impl, batch):
    benchmark.group = f"train step mnist cnn batch {batch} {device}"
    model = build_model(0, device)
    loss_fn = torch.nn.CrossEntropyLoss()
    if impl == "pixelops":
        model = pixelops.swap(copy.deepcopy(model), verbose=False)
        loss_fn = pixelops.nn.CrossEntropyLoss()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.rand(batch, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (batch,), device=device)

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()
        sync(device)

    benchmark(step)
