"""`python -m pixelops bench`: each op of the suite checked against PyTorch and timed beside it.

Every op keeps its cases in pixelops/bench/<op>.py (a function ``cases(device)``); this module runs them,
prints one table row per case as it finishes, and writes the rows as JSON on request.
"""
from __future__ import annotations

import datetime
import importlib
import json
import math
import platform

# Suite modules, in the order the table shows them. A new op adds its name here.
SUITES = ("relu", "cross_entropy", "conv2d", "per_sample", "sampling", "train_step", "overhead")
# --repeats at most: the defaults are 21 (CPU) and 50 (CUDA); 1000 has the slow cases (sampling) run for minutes each
MAX_REPEATS = 1000


def device_description(device: str) -> str:
    import torch

    if device == "cuda":
        return torch.cuda.get_device_name(0)
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or platform.machine()
    return f"{model}, {torch.get_num_threads()} threads"


def check_ops(ops):
    """Exits naming the unknown ones where `ops` (names from --ops) are not all SUITES'."""
    unknown = set(ops or ()) - set(SUITES)
    if unknown:
        raise SystemExit(f"bench --ops: unknown op(s) {', '.join(sorted(unknown))}; choose from {', '.join(SUITES)}")


def collect(device: str, ops=None):
    check_ops(ops)
    names = SUITES if not ops else [o for o in SUITES if o in ops]
    cases = []
    for name in names:
        cases.extend(importlib.import_module(f"pixelops.bench.{name}").cases(device))
    return cases


COLUMNS = ("op", "case", "shape", "device", "error", "torch ms", "pixelops ms", "speedup", "throughput")
WIDTHS = (14, 10, 26, 6, 9, 10, 12, 8, 22)


def _row_text(values):
    return "  ".join(str(v).ljust(w) for v, w in zip(values, WIDTHS)).rstrip()


def _throughput(case, ms, ceilings):
    if ms <= 0:
        return ""
    if case.flops:
        return f"{case.flops / ms / 1e9:.2f} TFLOP/s"
    if case.bytes:
        gbs = case.bytes / ms / 1e6
        text = f"{gbs:.0f} GB/s"
        if case.ceiling and case.ceiling in ceilings:
            text += f" ({100 * gbs / ceilings[case.ceiling]:.0f}% copy)"
        return text
    return ""


class _cudnn_tf32:
    """Sets torch.backends.cudnn.allow_tf32 (which pixelops' conv2d follows too) for one case, then restores it."""

    def __init__(self, value):
        self.value = value

    def __enter__(self):
        import torch

        self.saved = torch.backends.cudnn.allow_tf32
        if self.value is not None:
            torch.backends.cudnn.allow_tf32 = self.value

    def __exit__(self, *exc):
        import torch

        torch.backends.cudnn.allow_tf32 = self.saved


def geomeans(rows):
    """{(op, case name): (geometric mean of the speedups, number of rows)} for every name timed on several shapes."""
    groups = {}
    for r in rows:
        if r["speedup"] > 0 and math.isfinite(r["speedup"]):
            groups.setdefault((r["op"], r["case"]), []).append(r["speedup"])
    return {k: (math.exp(sum(map(math.log, v)) / len(v)), len(v)) for k, v in groups.items() if len(v) > 1}


def run(device: str = "cpu", ops=None, json_path=None, repeats=None, plot_path=None):
    import torch

    import pixelops
    from .timer import copy_bandwidth, time_pair

    if device == "cuda" and not pixelops.available_backends()["cuda"]:
        raise SystemExit("bench --device cuda: no CUDA GPU here, or this pixelops build has no CUDA kernels")
    torch.manual_seed(0)
    cases = collect(device, ops)
    ceilings = {}
    if any(c.ceiling == "copy" for c in cases):
        ceilings["copy"] = copy_bandwidth(device)
    print(f"pixelops {pixelops.__version__} against torch {torch.__version__} on {device_description(device)}")
    if "copy" in ceilings:
        print(f"measured copy bandwidth (read + write): {ceilings['copy']:.0f} GB/s")
    print(_row_text(COLUMNS))
    print(_row_text("-" * (w - 1) for w in WIDTHS))
    rows = []
    for case in cases:
        with _cudnn_tf32(case.tf32):
            args = case.setup()
            err = case.error(args)
            t_torch, t_ours = time_pair(case, args, repeats=repeats or case.repeats)
        t_torch *= case.torch_scale
        row = dict(op=case.op, case=case.name, shape=case.shape, device=case.device, error=err,
                   torch_ms=t_torch, pixelops_ms=t_ours, speedup=t_torch / t_ours if t_ours > 0 else float("nan"),
                   bytes=case.bytes, flops=case.flops, throughput=_throughput(case, t_ours, ceilings), **case.notes)
        rows.append(row)
        print(_row_text((case.op, case.name, case.shape, case.device, f"{err:.1e}", f"{t_torch:.4f}",
                         f"{t_ours:.4f}", f"{row['speedup']:.2f}x", row["throughput"])), flush=True)
        if case.notes:  # e.g. peak device memory, measured once beside the timings
            print("    " + ", ".join(f"{k}={v}" for k, v in case.notes.items()), flush=True)
        del args
    summary = geomeans(rows)
    if summary:
        print("geometric mean of speedups:")
        width = max(14, *(len(name) + 2 for _, name in summary))
        for (op, name), (g, count) in summary.items():
            print(f"  {op:<14}{name:<{width}}{g:.2f}x over {count} cases")
    meta = dict(device=device_description(device), torch=torch.__version__, pixelops=pixelops.__version__,
                date=datetime.datetime.now().isoformat(timespec="seconds"), ceilings_gbs=ceilings)
    if json_path:
        with open(json_path, "w") as f:
            json.dump(dict(meta=meta, rows=rows), f, indent=1)
        print(f"wrote {json_path}")
    if plot_path:
        from .plot import plot

        try:
            plot(rows, plot_path, f"pixelops {meta['pixelops']} against torch {meta['torch']} on {meta['device']}, "
                                  f"{meta['date']}")
        except ValueError as e:  # no row to draw (the rows are printed above, and in the JSON)
            raise SystemExit(f"bench --plot: {e}") from None
        print(f"wrote {plot_path}")
    return rows
