"""What a C++ autograd node would give pixelops' small layers: forward + backward timed three ways side by
side, PyTorch (F.conv2d, w * mask for the masked layers), pixelops as it is (a Python autograd.Function), and
pixelops with the libtorch node of conv2d_node.cpp in place of that Function (the same call, checks and
kernels; only the autograd path differs).

    python benchmarks/torch_node/host_times.py [--device cpu|cuda]

Two kinds of rows:
- a tiny layer, many calls back to back on the host clock: the host's cost of a call (one thread on a CPU);
- the bench's conv2d fwd+bwd rows (on CUDA with TF32 off and on), timed as `python -m pixelops bench` times
  them (each call with the device idle before it, medians), so the speedups compare with the bench's.
Every row first checks that the node's results equal pixelops' (the same kernels: they must).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import pixelops
import pixelops._torch.conv2d as torch_conv2d
from pixelops.bench import _cudnn_tf32
from pixelops.bench.conv2d import SUITE, _cases
from pixelops.bench.timer import per_call_us, time_calls

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build import as_eager_apply, load  # noqa: E402


def with_node(node_apply, fn):
    """fn, called with the node as pixelops' eager autograd path (swapped in around each call, so that calls
    with and without it can alternate)."""
    def call(*args):
        python_apply, torch_conv2d._conv2d_apply = torch_conv2d._conv2d_apply, node_apply
        try:
            return fn(*args)
        finally:
            torch_conv2d._conv2d_apply = python_apply
    return call


def same(a, b):
    return all(torch.allclose(u, v, rtol=1e-5, atol=1e-6) for u, v in zip(a, b))


def tiny_rows(node_apply, device, sync):
    """Host us per call of a tiny masked layer (1x2>2 5^2, 3x3 mask B: next to no arithmetic), each way."""
    g = torch.Generator().manual_seed(0)
    x, w, b = (torch.randn(*s, generator=g).to(device).requires_grad_() for s in ((1, 2, 5, 5), (2, 2, 3, 3), (2,)))
    grad = torch.randn(1, 2, 5, 5, generator=g).to(device)
    mask = pixelops.conv_mask((3, 3), "B", device=device)
    ways = {
        "PyTorch, F.conv2d(x, w * mask)": lambda: F.conv2d(x, w * mask, b, 1, 1),
        "pixelops (Python autograd.Function)": lambda: pixelops.masked_conv2d(x, w, b, "B", 1, 1),
        "pixelops, C++ node": with_node(node_apply, lambda: pixelops.masked_conv2d(x, w, b, "B", 1, 1)),
    }
    outs = [torch.autograd.grad(f(), (x, w, b), grad) for f in ways.values()]
    assert same(outs[1], outs[2]), "the node's gradients differ from pixelops'"
    print(f"host us per call, tiny masked layer 1x2>2 5^2 k3 mask B, float32, {device}:")
    for name, f in ways.items():
        fwd = per_call_us(f, sync)
        both = per_call_us(lambda: torch.autograd.grad(f(), (x, w, b), grad), sync)
        print(f"  forward (recorded) {fwd:6.1f}, forward + backward {both:6.1f}  {name}")


def bench_rows(node_apply, device):
    """The bench's fwd+bwd rows (the forward rows record no autograd, so the node does not change them): PyTorch,
    pixelops and the node in turn call by call, each call timed as the bench times it."""
    print(f"bench rows (fwd+bwd, medians, {device}): PyTorch ms, then each pixelops way's ms and speedup")
    speedups = {}
    for name, spec in SUITE.items():
        for case in _cases(name, spec, device):
            if not case.name.startswith("fwd+bwd"):
                continue
            node_fn = with_node(node_apply, case.ours_fn)
            args = case.setup()
            with _cudnn_tf32(case.tf32):
                assert same(case.ours_fn(args), node_fn(args)), f"{name}: the node's gradients differ"
                t_torch, t_ours, t_node = time_calls(case, (case.torch_fn, case.ours_fn, node_fn), args)
            speedups.setdefault(case.name, []).append((t_torch / t_ours, t_torch / t_node))
            print(f"  {name:11s} {case.name:13s} PyTorch {t_torch:.3f} | pixelops {t_ours:.3f} "
                  f"({t_torch / t_ours:.2f}x) | node {t_node:.3f} ({t_torch / t_node:.2f}x)")
    for name, pairs in speedups.items():
        ours, node = (statistics.geometric_mean(p[k] for p in pairs) for k in (0, 1))
        print(f"  geometric mean {name:13s} pixelops {ours:.2f}x, node {node:.2f}x")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    device = ap.parse_args().device
    t0 = time.perf_counter()
    node_apply = as_eager_apply(load())
    print(f"node built and attached in {time.perf_counter() - t0:.0f} s (torch {torch.__version__})")
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    threads = torch.get_num_threads()
    if device == "cpu":  # one thread for the tiny layer: its rows are about the host's cost, not the kernels'
        torch.set_num_threads(1)
    tiny_rows(node_apply, device, sync)
    torch.set_num_threads(threads)
    bench_rows(node_apply, device)


if __name__ == "__main__":
    main()
