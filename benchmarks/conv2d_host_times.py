"""Where the host time of a pixelops conv2d call goes, layer by layer, against F.conv2d's (CUDA).

    python benchmarks/conv2d_host_times.py [--device cpu]

On a tiny layer the GPU finishes each kernel before the host has launched the next, so back-to-back calls
run at the host's pace: microseconds per call are then the host's cost of the call. Each line peels one layer
off the call (the public function, its autograd Function, the tensor wrapper, the extension's binding), so
the differences say which layer costs what. The suite's small layers are host-bound on a slow host (the bench
times a call with the GPU idle before it), which is why this matters.
"""
import argparse

import torch
import torch.nn.functional as F

import pixelops
from pixelops._arrays import ABSENT, stream
from pixelops._torch import conv2d as tconv
from pixelops._torch.common import _C
from pixelops.bench.timer import per_call_us


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    dev = ap.parse_args().device
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    torch.backends.cudnn.allow_tf32 = False
    x = torch.randn(2, 8, 8, 8, device=dev)
    w = torch.randn(16, 8, 3, 3, device=dev)
    b = torch.randn(16, device=dev)
    y = torch.empty(2, 16, 8, 8, device=dev)
    g = torch.randn_like(y)
    gx, gw, gb = torch.empty_like(x), torch.empty_like(w), torch.empty_like(b)
    xg, wg, bg = (t.clone().requires_grad_() for t in (x, w, b))
    params = ((1, 1), (1, 1, 1, 1), (1, 1), 1, 9, False, False)
    s = stream(x)

    def ext_forward():
        _C.conv2d_forward(x, w, b, y, 1, 1, 1, 1, 1, 1, 1, 9, False, False, s)

    def ext_backward():
        _C.conv2d_backward(x, w, ABSENT, g, gx, gw, gb, 1, 1, 1, 1, 1, 1, 1, 9, False, False, s)

    def fwd_bwd(f):
        return lambda: torch.autograd.grad(f(xg, wg, bg, 1, 1), (xg, wg, bg), g)

    rows = [
        ("one torch launch: y.zero_()", lambda: y.zero_()),
        ("an empty tensor: x.new_empty", lambda: x.new_empty((2, 16, 8, 8))),
        ("stream(x)", lambda: stream(x)),
        ("extension forward (_C.conv2d_forward)", ext_forward),
        ("forward_kernel (+ output allocated)", lambda: tconv.forward_kernel(x, w, b, *params[:6], False)),
        ("pixelops.conv2d, no grad", lambda: pixelops.conv2d(x, w, b, 1, 1)),
        ("F.conv2d, no grad", lambda: F.conv2d(x, w, b, 1, 1)),
        ("pixelops.conv2d, grad (autograd record)", lambda: pixelops.conv2d(xg, wg, bg, 1, 1)),
        ("F.conv2d, grad", lambda: F.conv2d(xg, wg, bg, 1, 1)),
        ("extension backward (_C.conv2d_backward)", ext_backward),
        ("backward_kernel (+ outputs allocated)",
         lambda: tconv.backward_kernel(x, w, x, g, *params, [True, True, True])),
        ("pixelops forward + backward (autograd.grad)", fwd_bwd(pixelops.conv2d)),
        ("F.conv2d forward + backward (autograd.grad)", fwd_bwd(F.conv2d)),
    ]
    where = torch.cuda.get_device_name() if dev == "cuda" else "cpu"
    print(f"host us per call, 2x8>16 8^2 k3 float32 on {where} (best of 5 x 2000 calls)")
    for name, fn in rows:
        print(f"  {per_call_us(fn, sync):7.1f}  {name}")


if __name__ == "__main__":
    main()
