"""Where a pixelops conv2d forward + backward spends its GPU time: each kernel's share, per suite shape.

    python benchmarks/conv2d_kernel_times.py [--tf32] [--relu]

--relu: each layer with its ReLU, fused in pixelops' (activation="relu"), F.relu after F.conv2d in PyTorch's.

Uses torch.profiler (CUDA activity), so the kernels' own names show: gemm_kernel<ForwardGemm...>,
<GradInputGemm...>, <GradWeightGemm...>, reduce_grad_weight, grad_bias_kernel, the direct kernels and
grad_input by taps (pack_tap_weights, a ForwardGemm, gather_taps_kernel), and the halo kernels
(halo_pack_kernel, halo_conv_kernel with HaloTf32 (wide, preround: the settings it ran under), HaloSimt or
HaloSimtWide: the forward, and grad_input at stride 1; halo_grad_weight_kernel with GwTf32 (preround) or GwSimt;
pointwise_grad_weight_kernel with PwTf32 or PwSimt), and the host time of a call.
"""
import argparse
import re
from time import perf_counter

import torch
import torch.nn.functional as F
from torch.autograd import DeviceType

import pixelops
from pixelops.bench.conv2d import SUITE
from pixelops.ops.conv2d import mask_taps


def short(name):
    # (grad_input by taps runs a ForwardGemm too, beside its pack_tap_weights and gather_taps_kernel)
    for key in ("ForwardGemm", "GradInputGemm", "GradWeightGemm", "reduce_grad_weight", "grad_bias_kernel",
                "grad_input_direct", "forward_direct", "pack_tap_weights", "gather_taps_kernel", "halo_pack_kernel",
                "halo_conv_kernel", "halo_grad_weight_kernel", "grad_weight_direct", "pointwise_grad_weight_kernel"):
        if key in name:
            mma = re.search(r"(Tf32Mma|SimtMma|WmmaMma|HaloTf32T<(true|false), (true|false)>|HaloSimtT<true>|HaloSimt"
                            r"|GwTf32T<true>|GwTf32|GwSimt|PwTf32|PwSimt)", name)
            tap = ", tap-major" if re.search(r"Gemm<[^>]*, true>", name) else ""
            product = mma.group(1) if mma else ""
            if product.startswith("HaloTf32T<"):  # <preround, wide>
                product = "HaloTf32" + (" wide" if mma.group(3) == "true" else "") + (
                    " preround" if mma.group(2) == "true" else "")
            product = product.replace("HaloSimtT<true>", "HaloSimtWide").replace("GwTf32T<true>", "GwTf32 preround")
            return key + (f" ({product}{tap})" if mma else "")
    return name[:60]


REPS = 10  # profiled steps


def kernel_ms(step, reps=REPS, device="cuda"):
    """({kernel: GPU ms per step}, the profiler's events) over `reps` steps after three warm-up steps. On a
    CPU (device="cpu", to check a script without a GPU), each operator's own CPU time instead."""
    cuda = device == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for _ in range(3):
        step()
    sync()
    acts = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if cuda else [])
    with torch.profiler.profile(activities=acts) as prof:
        for _ in range(reps):
            step()
        sync()
    events = prof.key_averages()
    totals = {}
    for e in events:
        # the kernels themselves (device events): an operator's row, and an autograd Function's, repeats the
        # time of the kernels launched under it; the profiler's own buffer requests are not the step's
        if cuda:
            us = e.self_device_time_total if e.device_type == DeviceType.CUDA else 0
        else:
            us = e.self_cpu_time_total
        if us > 0 and "Activity Buffer" not in e.key:
            key = short(e.key)
            totals[key] = totals.get(key, 0.0) + us / reps / 1000.0
    return totals, events


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tf32", action="store_true")
    ap.add_argument("--relu", action="store_true")
    args = ap.parse_args()
    torch.backends.cudnn.allow_tf32 = args.tf32
    act = "relu" if args.relu else None
    if args.relu:
        print("every layer with its ReLU (pixelops: activation='relu'; torch: F.relu after F.conv2d)")
    for name, (n, cin, cout, hw, k, stride, pad, mask) in SUITE.items():
        x = torch.randn(n, cin, hw, hw, device="cuda", requires_grad=True)
        w = (torch.randn(cout, cin, k, k, device="cuda") / (cin * k * k) ** 0.5).requires_grad_()
        b = torch.randn(cout, device="cuda", requires_grad=True)

        def forward():
            if mask:
                return pixelops.masked_conv2d(x, w, b, mask, stride, pad, activation=act)
            return pixelops.conv2d(x, w, b, stride, pad, activation=act)

        def step():
            y = forward()
            torch.autograd.grad(y, (x, w, b), torch.ones_like(y))

        totals, events = kernel_ms(step)
        total = sum(totals.values())
        print(f"{name} (tf32={args.tf32}): {total:.3f} ms of kernels per fwd+bwd")
        for key, ms in sorted(totals.items(), key=lambda kv: -kv[1]):
            print(f"    {ms:8.3f} ms  {100 * ms / total:5.1f}%  {key}")

        # PyTorch's masked conv as the bench runs it: the mask made once, multiplied in the graph
        m = pixelops.conv_mask(k, mask, device="cuda") if mask else None

        def torch_forward():
            y = F.conv2d(x, w * m if mask else w, b, stride, pad)
            return F.relu(y) if act else y

        def torch_step():
            y = torch_forward()
            torch.autograd.grad(y, (x, w, b), torch.ones_like(y))

        # both sides' GPU time alone (the bench's figures include the host's time up to the kernels): the
        # ratios the kernels would give where the host kept ahead of the GPU
        with torch.no_grad():
            fwd_ms = [sum(kernel_ms(f)[0].values()) for f in (forward, torch_forward)]
        torch_total = sum(kernel_ms(torch_step)[0].values())
        print(f"    GPU ms, torch / pixelops: forward {fwd_ms[1]:.3f} / {fwd_ms[0]:.3f} = "
              f"{fwd_ms[1] / fwd_ms[0]:.2f}x, forward + backward {torch_total:.3f} / {total:.3f} = "
              f"{torch_total / total:.2f}x")
        # the same times as rates, against the device's ceilings (benchmarks/gemm_ceiling.py): a pass is 2 x N x
        # Cout x OH x OW x Cin x active taps flops (the forward, grad_input and the weight gradient alike)
        flops = 2 * n * cout * ((hw + 2 * pad - k) // stride + 1) ** 2 * cin * (mask_taps(k, mask) if mask else k * k)
        gw_ms = sum(ms for key, ms in totals.items() if re.search("GradWeightGemm|grad_weight_(kernel|direct)", key))
        print(f"    pixelops TFLOP/s: forward {flops / fwd_ms[0] / 1e9:.1f}, backward "
              f"{2 * flops / max(total - fwd_ms[0], 1e-9) / 1e9:.1f}, the weight gradient's kernel "
              f"{flops / max(gw_ms, 1e-9) / 1e9:.1f}")

        # host time of one call (the launches return before the GPU is done): where it exceeds the kernels'
        # time, a call that waits for its result is bound by the host
        print(f"    host ms per fwd+bwd: pixelops {host_ms(step):.3f}, torch {host_ms(torch_step):.3f}")
        # ... and where pixelops' goes: the forward call (checks, autograd's record, the launches), the backward
        # kernels' call alone (outputs allocated, the extension's launches and workspaces); the rest of the
        # whole is autograd's engine and the Python between them
        print("    pixelops host ms: forward call %.3f, backward kernels' call %.3f" % host_split(
            x, w, b, mask, stride, pad, k, act))
        cpu = sorted(((e.key, e.self_cpu_time_total / REPS) for e in events if e.self_cpu_time_total > 0),
                     key=lambda kv: -kv[1])[:8]
        print("    host us per fwd+bwd, by call: " + ", ".join(f"{k[:32]} {v:.0f}" for k, v in cpu))


def host_split(x, w, b, mask, stride, pad, k, act):
    from pixelops._torch.conv2d import _tf32, backward_kernel

    def fwd():
        if mask:
            return pixelops.masked_conv2d(x, w, b, mask, stride, pad, activation=act)
        return pixelops.conv2d(x, w, b, stride, pad, activation=act)

    y = fwd().detach()
    g = torch.ones_like(y)
    ntaps = mask_taps(k, mask) if mask else k * k
    args = (x.detach(), w.detach(), y, g, (stride, stride), (pad, pad, pad, pad), (1, 1), 1, ntaps, act is not None,
            _tf32(x, None), [True, True, True])
    return host_ms(fwd), host_ms(lambda: backward_kernel(*args))


def host_ms(fn, reps=20):
    for _ in range(3):  # first calls (cuDNN's algorithm choice, allocations) are not the steady state
        fn()
    total = 0.0
    for _ in range(reps):
        torch.cuda.synchronize()
        t0 = perf_counter()
        fn()
        total += perf_counter() - t0
    torch.cuda.synchronize()
    return total / reps * 1e3


if __name__ == "__main__":
    main()
