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


def picture_formats() -> set:
    """The file name extensions savefig can write here, without the dot: what --plot and plot --out accept.
    pgf is left out: it needs a LaTeX install, and would fail only once the picture is drawn."""
    require_matplotlib()
    from matplotlib.backend_bases import FigureCanvasBase

    return set(FigureCanvasBase.get_supported_filetypes()) - {"pgf"}


# Speedups drawn: a timing ratio outside this range is a broken row (a clock that read 0, an edited JSON), and
# would take the log axis past float range (1e308 * margin is inf) or draw thousands of ticks.
DRAWN = (1e-6, 1e6)


def _drawable(row) -> bool:
    s = row.get("speedup")
    return isinstance(s, (int, float)) and not isinstance(s, bool) and DRAWN[0] <= s <= DRAWN[1]


def plot(rows, path: str, title: str = "") -> str:
    """Writes the picture of `rows` (the dicts `run` returns or writes as JSON) to `path`; returns path.
    Rows without a speedup in DRAWN (NaN where a clock read 0) are left out, and said so; none: ValueError."""
    require_matplotlib().use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, NullLocator

    from . import geomeans

    drawn = [r for r in rows if _drawable(r)]
    if not drawn:
        raise ValueError(f"no row with a speedup from {DRAWN[0]:g} to {DRAWN[1]:g} to draw")
    if len(drawn) < len(rows):
        print(f"(left out of the picture: {len(rows) - len(drawn)} row(s) without a speedup from {DRAWN[0]:g} "
              f"to {DRAWN[1]:g})")
    rows = drawn
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
    # ticks at powers of 2; where the range is wide, at every step-th power (1x among them), so that about 8
    # labels at most share the axis
    first, last = math.floor(math.log2(low / 1.5)), math.ceil(math.log2(high * 1.6))
    step = max(1, math.ceil((last - first) / 8))
    ticks = [2.0 ** e for e in range(first, last + 1) if e % step == 0]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([f"{t:.3g}x" for t in ticks])
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


def read_bench_json(json_path: str):
    """(rows, title) of a bench JSON (`bench --json`), the title naming the run's device, versions and date.
    OSError where the file cannot be read, ValueError where it is not JSON or not shaped as the bench writes it."""
    with open(json_path) as f:
        data = json.load(f)
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
        raise ValueError("expected an object whose 'rows' is a list")
    meta = data.get("meta", {})
    if not isinstance(meta, dict):
        raise ValueError("its 'meta' is not an object")
    for i, row in enumerate(data["rows"]):
        if not isinstance(row, dict) or not {"op", "case", "shape"} <= row.keys():
            raise ValueError(f"row {i} is not an object with 'op', 'case' and 'shape'")
    title = (f"pixelops {meta.get('pixelops', '?')} against torch {meta.get('torch', '?')} on "
             f"{meta.get('device', '?')}, {meta.get('date', '')}")
    return data["rows"], title
