"""Each kernel's GPU time in a bench row, PyTorch's side beside pixelops', from torch.profiler's kernel events.

    python benchmarks/case_kernel_times.py --ops per_sample [--device cuda] [--match maskB]

The rows are the bench's own (pixelops.bench: the same shapes, inputs and callables as
`python -m pixelops bench --ops ...`), so where a bench row is slow this says which kernels make it so, on
either side. (conv2d_kernel_times.py does the same for the conv2d suite, with the host-time split.) On a CPU
the "kernels" are the operators' own CPU times: a check of the script, not a measure.
"""
import argparse

import torch
from conv2d_kernel_times import kernel_ms  # (benchmarks/ is on sys.path when this runs as a script)

from pixelops.bench import _cudnn_tf32, collect


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ops", required=True, help="bench suites, comma-separated (as python -m pixelops bench)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--match", default="", help="only rows whose shape or notes contain this")
    ap.add_argument("--top", type=int, default=8, help="kernels listed a side")
    args = ap.parse_args()
    for case in collect(args.device, args.ops.split(",")):
        if args.match not in case.shape + " " + " ".join(map(str, case.notes.values())):
            continue
        with _cudnn_tf32(case.tf32):
            inputs = case.setup()
            print(f"{case.op} {case.name} {case.shape} (tf32={torch.backends.cudnn.allow_tf32})")
            for side, fn in (("torch", case.torch_fn), ("pixelops", case.ours_fn)):
                totals, _ = kernel_ms(lambda: fn(inputs), device=args.device)
                total = sum(totals.values())
                print(f"  {side}: {total:.3f} ms of kernels a call")
                for key, ms in sorted(totals.items(), key=lambda kv: -kv[1])[:args.top]:
                    print(f"    {ms:8.3f} ms  {100 * ms / max(total, 1e-12):5.1f}%  {key}")


if __name__ == "__main__":
    main()
