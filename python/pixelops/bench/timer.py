"""Side-by-side timing: PyTorch and pixelops alternate call by call, so drift on a shared machine hits both.

GPU: CUDA events around each call (median), with the L2 flushed between calls for memory-bound ops.
CPU: host clock, enough calls per sample to last about a millisecond, median over samples.
Host-bound cases (per-call overhead on tiny tensors) time many back-to-back calls, synchronising at the end.
"""
from __future__ import annotations

import statistics
import time

import torch


class _Flusher:
    """Writes a buffer larger than the L2 so each timed call starts with a cold cache."""

    def __init__(self, device):
        self.buf = None
        if device == "cuda":
            l2 = getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 50 << 20)
            self.buf = torch.empty(max(2 * l2, 64 << 20) // 4, dtype=torch.float32, device="cuda")

    def __call__(self):
        if self.buf is not None:
            self.buf.add_(1.0)


def _calls_per_sample(fn, args, device, target_s):
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    n = 1
    while True:
        sync()
        t0 = time.perf_counter()
        for _ in range(n):
            fn(args)
        sync()
        dt = time.perf_counter() - t0
        if dt >= target_s or n >= 1 << 16:
            return n
        n = max(n * 2, int(n * target_s / max(dt, 1e-9)))


def time_pair(case, args, repeats=None, warmup=3):
    """Median milliseconds per call of (torch_fn, ours_fn) on the same inputs."""
    return tuple(time_calls(case, (case.torch_fn, case.ours_fn), args, repeats, warmup))


def time_calls(case, fns, args, repeats=None, warmup=3):
    """Median milliseconds per call of each of fns (on the same inputs, in turn call by call), timed as the
    case says (device, host_bound, flush_cache)."""
    for fn in fns:
        for _ in range(warmup):
            fn(args)
    samples = [[] for _ in fns]
    if case.device == "cuda" and not case.host_bound:
        repeats = repeats or 50
        flush = _Flusher("cuda") if case.flush_cache else (lambda: None)
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in fns]
        for _ in range(repeats):
            for k, fn in enumerate(fns):
                flush()
                start, end = events[k]
                start.record()
                fn(args)
                end.record()
                end.synchronize()
                samples[k].append(start.elapsed_time(end))
    else:
        repeats = repeats or 21
        sync = torch.cuda.synchronize if case.device == "cuda" else (lambda: None)
        target = 0.02 if case.host_bound else 0.002
        inner = [_calls_per_sample(fn, args, case.device, target) for fn in fns]
        for _ in range(repeats):
            for k, fn in enumerate(fns):
                sync()
                t0 = time.perf_counter()
                for _ in range(inner[k]):
                    fn(args)
                sync()
                samples[k].append((time.perf_counter() - t0) * 1e3 / inner[k])
    return [statistics.median(s) for s in samples]


def per_call_us(fn, sync, calls=2000, rounds=5):
    """Best of `rounds` of the mean host time of `calls` back-to-back calls (a synchronisation at the end)."""
    for _ in range(50):
        fn()
    sync()
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        sync()
        best = min(best, (time.perf_counter() - t0) / calls * 1e6)
    return best


def copy_bandwidth(device) -> float:
    """Measured device copy bandwidth in GB/s (bytes read + written): the memory ceiling."""
    n = (1 << 28) if device == "cuda" else (1 << 24)  # 1 GiB on the GPU, 64 MiB on the host
    src = torch.randn(n, device=device)
    dst = torch.empty_like(src)
    ms = []
    for _ in range(10 if device == "cuda" else 5):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            dst.copy_(src)
            end.record()
            end.synchronize()
            ms.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            dst.copy_(src)
            ms.append((time.perf_counter() - t0) * 1e3)
    return 2 * n * 4 / (statistics.median(ms) * 1e-3) / 1e9
