"""torch.compile(fullgraph=True) of a model on pixelops: no graph break, results and gradients equal eager.

CPU compiles are slow (seconds each on 2 cores): one aot_eager compile (the whole autograd graph through the
custom ops and their fake kernels), one inductor compile (marked slow)."""
import os

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


# (pixelops first: also asked whether torch is installed before importing it, as libraries do)
@pytest.mark.parametrize("imports", ["torch, pixelops", "pixelops\nassert importlib.util.find_spec('torch')\nimport torch"],
                         ids=["torch-first", "pixelops-first"])
def test_first_calls_compile_in_one_graph_without_recompiling(imports):
    # In a fresh process (nothing called eagerly before): cross_entropy's first call compiled whole (its entry
    # point imported a module inside the traced code: a graph break), and a conv's second identical call not
    # compiled again (a cache the first call filled changed a global the guards read). With pixelops imported
    # first (isort's order), its torch side loads as torch is imported: loaded at the first call, inside the
    # traced function, it was an import Dynamo cannot trace (an error under fullgraph=True). torch's module keeps
    # its own loader.
    import subprocess
    import sys
    code = f"""
import importlib.machinery, importlib.util, sys
import {imports}
assert "pixelops._torch.conv2d" in sys.modules and "pixelops._torch.cross_entropy" in sys.modules
assert type(torch.__loader__) is type(torch.__spec__.loader) is importlib.machinery.SourceFileLoader
w = torch.randn(4, 3, 3, 3, dtype=torch.float64)
f = torch.compile(lambda x, t: pixelops.cross_entropy(pixelops.conv2d(x, w, padding=1).flatten(2).mean(2), t),
                  backend="eager", fullgraph=True)
x, t = torch.randn(2, 3, 6, 6, dtype=torch.float64), torch.tensor([1, 3])
want = torch.nn.functional.cross_entropy(torch.nn.functional.conv2d(x, w, padding=1).flatten(2).mean(2), t)
assert torch.allclose(f(x, t), want)
torch.compiler.set_stance("fail_on_recompile")
for _ in range(2):
    assert torch.allclose(f(x, t), want)
print("ok")
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_numpy_calls_never_import_torch():
    # pixelops waits for torch's import to load its torch side (pixelops/_torch_loader.py): numpy calls alone
    # leave torch unimported
    import subprocess
    import sys
    code = """
import sys
import numpy as np
import pixelops
rng = np.random.default_rng(0)
x, w = rng.standard_normal((1, 3, 5, 5)), rng.standard_normal((3, 3, 3, 3))
pixelops.relu(pixelops.masked_conv2d(pixelops.conv2d(x, w, padding=1), w))
pixelops.cross_entropy(rng.standard_normal((3, 4)), np.array([0, 3, 1]))
print("torch" in sys.modules)
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr[-2000:]


def test_a_dynamic_size_is_not_fixed_by_a_one_row_output():
    w = torch.randn(2, 3, 3, 3, dtype=torch.float64)
    f = torch.compile(lambda x: pixelops.conv2d(x, w), backend="eager", fullgraph=True)
    for shape in [(2, 3, 6, 6), (3, 3, 3, 4)]:  # the second: one output row (its test fixed the height at 3)
        x = torch.randn(shape, dtype=torch.float64)
        torch._dynamo.mark_dynamic(x, 2)
        torch.testing.assert_close(f(x), torch.nn.functional.conv2d(x, w), rtol=1e-12, atol=1e-12)
