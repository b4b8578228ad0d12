"""The bench rows as a picture: one bar per row, its speedup over PyTorch on a log axis around the 1.0x line
(right of it pixelops is faster), the rows grouped as the table prints them.

    python -m pixelops bench --plot speedups.png          # while benchmarking
    python -m pixelops plot bench.json --out speedups.png  # from a JSON the bench wrote (gpu_check's, say)
"""
from __future__ import annotations

import json
import math

FASTER, SLOWER, MEAN = "#2a9d5c", "#d1603d", "#3d6fb4"


def _label(row) -> str:
    suite = row.get("suite")
    return f"{row['op']} {row['case']}  {suite or row['shape']}"


def require_matplotlib(what: str = "bench --plot"):
    """matplotlib, or a clear exit naming the command that needed it (the CLI asks before a run, plot() again)."""
    try:
        import matplotlib
    except ImportError:
        raise SystemExit(f"{what} needs matplotlib: pip install matplotlib (or the demo extra, '.[demo]')") from None
    return matplotlib


def plot(rows, path: str, title: str = "") -> str:
    """Writes the picture of `rows` (the dicts `run` returns or writes as JSON) to `path`; returns path."""
    require_matplotlib().use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, NullLocator

    from . import geomeans

    rows = [r for r in rows if r.get("speedup") and math.isfinite(r["speedup"]) and r["speedup"] > 0]
    if not rows:
        raise SystemExit("bench --plot: no row with a speedup to draw")
    # the rows, then the geometric mean of each case timed on several shapes (as the table ends)
    bars = [(_label(r), r["speedup"], FASTER if r["speedup"] >= 1 else SLOWER) for r in rows]
    bars += [(f"geometric mean: {op} {case} ({n})", g, MEAN) for (op, case), (g, n) in geomeans(rows).items()]
    labels, speedups, colors = zip(*bars)
    fig, ax = plt.subplots(figsize=(9, 0.26 * len(bars) + 1.4))
    ys = range(len(bars))
    ax.barh(ys, speedups, color=colors, height=0.7)
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", linewidth=1)
    low, high = min(speedups + (1.0,)), max(speedups + (1.0,))
    ax.set_xlim(low / 1.5, high * 1.6)
    ticks = [2.0 ** e for e in range(math.floor(math.log2(low / 1.5)), math.ceil(math.log2(high * 1.6)) + 1)]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([f"{t:g}x" for t in ticks])
    for y, s in zip(ys, speedups):
        ax.text(s * 1.03, y, f"{s:.2f}x", va="center", fontsize=7)
    ax.set_yticks(list(ys))
    ax.set_yticklabels(labels, fontsize=7)
    ax.invert_yaxis()  # first row on top, as in the table
    ax.set_xlabel("speedup over PyTorch (PyTorch time / pixelops time; log scale, right of 1 pixelops is faster)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")  # (the axis label is wider than the axes)
    plt.close(fig)
    return path


def plot_json(json_path: str, out: str) -> str:
    """The picture of a bench JSON (`bench --json`): its rows, titled with the run's device, versions and date."""
    with open(json_path) as f:
        data = json.load(f)
    meta = data.get("meta", {})
    title = (f"pixelops {meta.get('pixelops', '?')} against torch {meta.get('torch', '?')} on "
             f"{meta.get('device', '?')}, {meta.get('date', '')}")
    return plot(data["rows"], out, title)
