"""torch.compile(fullgraph=True) of a model on pixelops: no graph break, results and gradients equal eager.

CPU compiles are slow (seconds each on 2 cores): one aot_eager compile (the whole autograd graph through the
custom ops and their fake kernels), one inductor compile (marked slow)."""
import pytest
import torch

import pixelops
from nn_models import batch, small_cnn


def _loss(model, loss_fn):
    def loss(x, y):
        return loss_fn(model(x), y)
    return loss


def _grads(model):
    out = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    return out


@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_compiled_training_step_equals_eager(backend):
    torch._dynamo.reset()
    model = pixelops.swap(small_cnn(), verbose=False)
    loss_fn = pixelops.nn.CrossEntropyLoss()
    x, y = batch()
    eager_loss = _loss(model, loss_fn)(x, y)
    eager_loss.backward()
    eager_grads = _grads(model)
    compiled = torch.compile(_loss(model, loss_fn), fullgraph=True, backend=backend)
    loss = compiled(x, y)
    loss.backward()  # the backward graph AOTAutograd compiled, through the ops' registered autograd
    torch.testing.assert_close(loss, eager_loss, rtol=1e-5, atol=1e-6)
    for g, e in zip(_grads(model), eager_grads):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-6)


def test_compiled_graph_holds_pixelops_ops_and_patch_compiles():
    torch._dynamo.reset()
    seen = []

    def backend(gm, example_inputs):
        seen.append(str(gm.graph))
        return gm

    model = small_cnn()
    x, y = batch()
    with pixelops.patch():  # torch.nn modules calling the patched functionals
        out = torch.compile(model, fullgraph=True, backend=backend)(x)
        ref = model(x)
    torch.testing.assert_close(out, ref)
    graph = "\n".join(seen)
    assert "pixelops.conv2d" in graph and "pixelops.relu" in graph, graph
