"""CUDA graphs: a whole training step on pixelops (forward, backward, optimizer) captured once and replayed
gives what eager torch gives: no host synchronisation or allocation outside the graph pool inside the ops."""
import pytest
import torch

import pixelops
from nn_models import batch, small_cnn

pytestmark = pytest.mark.cuda


def test_captured_training_step_matches_eager_torch():
    model = pixelops.swap(small_cnn(device="cuda"), verbose=False)
    ref = small_cnn(device="cuda")
    loss_fn, ref_loss_fn = pixelops.nn.CrossEntropyLoss(), torch.nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.05, momentum=0.9)
    static_x, static_y = batch(device="cuda")

    def step(m, fn, o, x, y):
        o.zero_grad(set_to_none=False)
        loss = fn(m(x), y)
        loss.backward()
        o.step()
        return loss

    # Warm up on a side stream (as torch.cuda.graphs' docs ask), then capture.
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step(model, loss_fn, opt, static_x, static_y)
    torch.cuda.current_stream().wait_stream(side)
    for _ in range(3):
        step(ref, ref_loss_fn, ref_opt, static_x, static_y)

    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_loss = step(model, loss_fn, opt, static_x, static_y)

    for seed in range(4):
        x, y = batch(seed=50 + seed, device="cuda")
        static_x.copy_(x)
        static_y.copy_(y)
        graph.replay()
        ref_loss = step(ref, ref_loss_fn, ref_opt, x, y)
        torch.cuda.synchronize()
        torch.testing.assert_close(static_loss, ref_loss, rtol=1e-4, atol=1e-5)
    for p, q in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-4)
