"""The device's measured matrix-multiply ceilings (torch.matmul, 8192^3): float32 with TF32 off and on, bfloat16.
The conv2d bench rows' TFLOP/s are read against these.

    python benchmarks/gemm_ceiling.py
"""
import torch


def tflops(dtype, tf32, n=8192, reps=10):
    torch.backends.cuda.matmul.allow_tf32 = tf32
    a, b = (torch.randn(n, n, device="cuda").to(dtype) for _ in range(2))  # random data, never zeros
    for _ in range(3):
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(reps):
        start.record()
        a @ b
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    return 2 * n ** 3 / (times[len(times) // 2] * 1e-3) / 1e12


if __name__ == "__main__":
    print(f"GEMM ceiling on {torch.cuda.get_device_name(0)}: float32 {tflops(torch.float32, False):.0f} TFLOP/s, "
          f"TF32 {tflops(torch.float32, True):.0f} TFLOP/s, bfloat16 {tflops(torch.bfloat16, False):.0f} TFLOP/s")
