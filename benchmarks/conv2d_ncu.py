"""One pixelops conv2d forward and backward of a suite shape, for Nsight Compute to look into.

    ncu --clock-control none --kernel-name regex:gemm_kernel --launch-skip 6 --launch-count 3 \\
        --section SpeedOfLight --section WarpStateStats --section Occupancy \\
        python benchmarks/conv2d_ncu.py mnist_c2 --tf32

Two warm-up passes run first (6 GEMM launches with --launch-skip 6 skip them: forward, grad_input, grad_weight).
"""
import argparse

import torch

import pixelops
from pixelops.bench.conv2d import SUITE

ap = argparse.ArgumentParser()
ap.add_argument("shape", choices=sorted(SUITE))
ap.add_argument("--tf32", action="store_true")
args = ap.parse_args()
torch.backends.cudnn.allow_tf32 = args.tf32
n, cin, cout, hw, k, stride, pad, mask = SUITE[args.shape]
x = torch.randn(n, cin, hw, hw, device="cuda", requires_grad=True)
w = (torch.randn(cout, cin, k, k, device="cuda") / (cin * k * k) ** 0.5).requires_grad_()
for _ in range(3):
    y = pixelops.masked_conv2d(x, w, None, mask, stride, pad) if mask else pixelops.conv2d(x, w, None, stride, pad)
    torch.autograd.grad(y, (x, w), torch.ones_like(y))
torch.cuda.synchronize()
