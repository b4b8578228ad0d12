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


@pytest.mark.parametrize("grad", [False, True])
def test_jit_trace_records_the_ops(grad):
    # torch.jit.trace records the ops it sees: a kernel called straight from Python would leave the traced graph
    # an empty output tensor (garbage on the next call); under tracing the ops go through pixelops:: custom ops
    model = pixelops.swap(small_cnn(), verbose=False)
    x, y = batch()
    with torch.set_grad_enabled(grad):
        traced = torch.jit.trace(model, (x,), check_trace=False)
        assert "pixelops::conv2d" in str(traced.inlined_graph) and "pixelops::relu" in str(traced.inlined_graph)
        x2 = torch.randn_like(x)
        loss = pixelops.cross_entropy(traced(x2), y)
        ref = pixelops.cross_entropy(model(x2), y)
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)
    if grad:
        loss.backward()
        traced_grads = _grads(model)
        ref.backward()
        for g, e in zip(traced_grads, _grads(model)):
            torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-6)
    loss_trace = torch.jit.trace(lambda a, t: pixelops.cross_entropy(a, t), (x2[:, 0, 0].detach(), y[:8]))
    torch.testing.assert_close(loss_trace(x2[:, 0, 1], y), torch.nn.functional.cross_entropy(x2[:, 0, 1], y))
