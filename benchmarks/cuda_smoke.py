"""Every CUDA kernel of pixelops once, on small awkward shapes, compared with PyTorch in float64.

Small enough to run under compute-sanitizer (memcheck) in a short GPU lease: gpu_check.sh runs it there,
beside the tests, to catch out-of-bounds reads and writes that a value comparison can miss.

    compute-sanitizer --tool memcheck python benchmarks/cuda_smoke.py
"""
import sys

import torch
import torch.nn.functional as F

import pixelops

# DEV=cpu checks this script itself on a machine without a GPU.
DEV = __import__("os").environ.get("DEV", "cuda")
failures = []


def check(name, got, ref, tol):
    got, ref = got.double().cpu(), ref.double().cpu()
    err = ((got - ref).norm() / ref.norm().clamp_min(1e-30)).item()
    ok = bool(torch.isfinite(got).all()) and err <= tol
    print(f"{'ok  ' if ok else 'FAIL'} {name}: rel err {err:.2e} (tol {tol:.0e})")
    if not ok:
        failures.append(name)


def conv_case(name, n, cin, cout, hw, k, stride, pad, groups=1, dtype=torch.float32, tf32=False, mask=None,
              relu=False, strided_grad=False):
    g = torch.Generator().manual_seed(len(name))
    x = torch.randn(n, cin, *hw, generator=g, dtype=torch.float64)
    w = torch.randn(cout, cin // groups, k, k, generator=g, dtype=torch.float64) / (cin * k * k) ** 0.5
    b = torch.randn(cout, generator=g, dtype=torch.float64)
    m = pixelops.conv_mask(k, mask, dtype=torch.float64) if mask else torch.ones(k, k, dtype=torch.float64)
    ref_x, ref_w, ref_b = (t.clone().requires_grad_() for t in (x, w, b))
    ref = F.conv2d(ref_x, ref_w * m, ref_b, stride, pad, 1, groups)
    ref = ref.relu() if relu else ref
    go = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    ref.backward(go)
    cx, cw, cb = (t.to(DEV, dtype).requires_grad_() for t in (x, w, b))
    act = "relu" if relu else None
    if mask:
        out = pixelops.masked_conv2d(cx, cw, cb, mask, stride, pad, 1, groups, activation=act, allow_tf32=tf32)
    else:
        out = pixelops.conv2d(cx, cw, cb, stride, pad, 1, groups, activation=act, allow_tf32=tf32)
    gy = go.to(DEV, dtype)
    if strided_grad:  # grad_y as the first columns of a wider tensor: the halo weight gradient and the
        # fused ReLU's gate pass take only contiguous planes, so the GEMMs run with the gate in their loaders
        wide = torch.randn(*gy.shape[:-1], gy.shape[-1] + 3, generator=g, dtype=torch.float64).to(DEV, dtype)
        wide[..., : gy.shape[-1]] = gy
        gy = wide[..., : gy.shape[-1]]
    out.backward(gy)
    tol = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 3e-3, torch.bfloat16: 2e-2}[dtype]
    if tf32:
        tol = 2e-3
    check(f"conv {name} out", out, ref, tol)
    check(f"conv {name} grad_input", cx.grad, ref_x.grad, tol)
    check(f"conv {name} grad_weight", cw.grad, ref_w.grad, tol)
    check(f"conv {name} grad_bias", cb.grad, ref_b.grad, tol)


def main():
    torch.manual_seed(0)
    x = torch.randn(3, 1001, dtype=torch.float64)
    got = pixelops.relu(x.float().to(DEV))
    check("relu", got, x.float().relu(), 0)

    logits = torch.randn(37, 13, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 13, (37,))
    ref = F.cross_entropy(logits, target, label_smoothing=0.1)
    ref.backward()
    cl = logits.detach().float().to(DEV).requires_grad_()
    out = pixelops.cross_entropy(cl, target.to(DEV), label_smoothing=0.1)
    out.backward()
    check("cross_entropy", out, ref.detach(), 1e-5)
    check("cross_entropy grad", cl.grad, logits.grad, 1e-5)

    conv_case("3x3 s1 p1", 2, 5, 7, (9, 11), 3, 1, 1)
    conv_case("5x5 s2 p2", 3, 6, 10, (13, 10), 5, 2, 2)
    conv_case("1x1", 2, 17, 33, (7, 5), 1, 1, 0)
    conv_case("grouped", 2, 8, 12, (9, 9), 3, 1, 1, groups=4)
    conv_case("depthwise", 2, 6, 6, (8, 9), 3, 2, 1, groups=6)
    conv_case("fp64", 2, 5, 7, (9, 11), 3, 1, 1, dtype=torch.float64)
    conv_case("tf32", 2, 19, 35, (12, 11), 3, 1, 1, tf32=True)  # forward and grad_input from the halo
    conv_case("tf32 s2 mask B grouped", 3, 24, 80, (11, 13), 3, 2, 1, groups=2, tf32=True, mask="B")
    # the TF32 halo weight gradient at a mask B's 5 taps, its count known when compiling (gw_with_taps)
    conv_case("tf32 mask B", 2, 16, 24, (10, 9), 3, 1, 1, tf32=True, mask="B")
    conv_case("tf32 2x2 tiny images", 9, 40, 24, (3, 2), 2, 1, 0, tf32=True)
    conv_case("tf32 1x1", 2, 72, 24, (7, 9), 1, 1, 0, tf32=True)  # flat mode (PIXELOPS_CONV_HALO_FLAT)
    conv_case("tf32 1x1 whole pieces", 3, 72, 24, (8, 9), 1, 1, 0, tf32=True)  # and the pointwise grad_weight
    conv_case("1x1 whole pieces", 3, 72, 40, (8, 9), 1, 1, 0)  # the same in float32 (PIXELOPS_CONV_PW_GW)
    conv_case("tf32 7x7 mask A", 2, 8, 16, (12, 11), 7, 1, 3, tf32=True, mask="A")  # grad_weight's tap groups
    # 3 channels of 5x5 taps: too few channels for the halo, too many taps for the direct kernel, so the forward
    # is a TF32 GEMM under every setting (on mma.sync; WMMA where PIXELOPS_CONV_GEMM_MMA=0): 80 rows, two tiles
    conv_case("tf32 GEMM 3-channel 5x5 s2", 2, 3, 80, (23, 21), 5, 2, 2, tf32=True)
    if DEV == "cuda":  # half types are CUDA-only
        conv_case("fp16", 2, 16, 24, (10, 9), 3, 1, 1, dtype=torch.float16)
        conv_case("bf16", 2, 16, 24, (10, 9), 3, 1, 1, dtype=torch.bfloat16)
    conv_case("mask A 7x7", 2, 1, 16, (12, 11), 7, 1, 3, mask="A")
    # few channels, three tiles across, three grad_y chunks, two output blocks (PIXELOPS_CONV_FEW_TILED=1)
    conv_case("3-channel 5x5 wide image", 2, 3, 40, (20, 70), 5, 1, 2)
    conv_case("mask B 3x3", 2, 16, 16, (12, 11), 3, 1, 1, mask="B")
    # grad_input with 24 rows over 312 pixels: the 32 x 128 tile; 1 -> 20 channels: grad_input by taps
    conv_case("32-row tile", 2, 24, 40, (13, 12), 3, 1, 1)
    # the float32 halo weight gradient (GwSimt): two m tiles (the second part empty), a ragged channel chunk,
    # and a mask
    conv_case("fp32 halo grad_weight", 2, 12, 70, (11, 10), 3, 1, 1)
    conv_case("fp32 halo grad_weight mask B", 3, 16, 40, (9, 13), 3, 1, 1, mask="B")
    # 32 x 9 = 288 weight-gradient columns over 70 rows on the float32 GEMM (a strided grad_y keeps the halo
    # kernels off it) with the fused ReLU's gate in its loaders: three 96-wide column tiles (PIXELOPS_CONV_GW_TILE96)
    conv_case("fp32 grad_weight 288 columns", 2, 32, 70, (9, 10), 3, 1, 1, relu=True, strided_grad=True)
    # the same with the gate applied first (PIXELOPS_CONV_GATE_FIRST), then the halo weight gradient
    conv_case("fp32 gate first", 2, 32, 70, (9, 10), 3, 1, 1, relu=True)
    # 17-32 rows: the float32 halo's wide layout (PIXELOPS_CONV_HALO_WIDE) (forward 24 rows, grad_input 28)
    conv_case("fp32 halo wide", 3, 28, 24, (10, 11), 3, 1, 1)
    # strided grad_input by phase where PIXELOPS_CONV_HALO_PHASES=1 (the 3x3's one-tap phase: GEMM or flat mode)
    conv_case("fp32 s2 phases", 2, 40, 24, (13, 12), 3, 2, 1)
    conv_case("tf32 5x5 s2 phases", 2, 20, 16, (11, 13), 5, 2, 2, tf32=True)
    # a stride-2 weight gradient over two blocks' shared memory: the halo at one block an SM where
    # PIXELOPS_CONV_HALO_GW_ONE_BLOCK=1 (TF32, and float32 with 40 rows), else the GEMM
    conv_case("tf32 s2 56-wide grad_weight", 1, 16, 40, (20, 56), 3, 2, 1, tf32=True)
    conv_case("fp32 s2 56-wide grad_weight", 1, 16, 40, (20, 56), 3, 2, 1)
    conv_case("taps", 2, 1, 20, (13, 12), 5, 2, 2)

    model = pixelops.PixelCNN(levels=4, channels=16, layers=2, head_channels=16)
    cpu = model.sample(2, size=(6, 7), seed=3, method="fused")
    gpu = model.to(DEV).sample(2, size=(6, 7), seed=3, method="fused")
    mismatch = (cpu.float().cpu() != gpu.cpu()).float().mean().item()
    print(f"{'ok  ' if mismatch < 0.05 else 'FAIL'} pixelcnn fused sample: {mismatch:.1%} of pixels differ from CPU")
    if mismatch >= 0.05:
        failures.append("pixelcnn")

    print("smoke:", "all ok" if not failures else f"{len(failures)} failed: {', '.join(failures)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
