"""pixelops.swap(model): every torch.nn module that pixelops has a drop-in for, turned into it in place."""
from __future__ import annotations

import sys
from dataclasses import dataclass, field

from .dropins import TABLE

_BY_TYPE = {row.torch_module: row for row in TABLE}
_TORCH_TYPES = tuple(_BY_TYPE)
_PIXELOPS_TYPES = tuple(row.module for row in TABLE)


@dataclass
class SwapReport:
    swapped: list = field(default_factory=list)   # (module name, what it was, what it is now)
    left: list = field(default_factory=list)      # (module name, what it is, why it was left)

    def __str__(self):
        lines = [f"pixelops.swap: {len(self.swapped)} module(s) swapped, {len(self.left)} left"]
        lines += [f"  swapped {name}: {was} -> {now}" for name, was, now in self.swapped]
        lines += [f"  left    {name}: {what}: {why}" for name, what, why in self.left]
        return "\n".join(lines)


def swap(model, *, verbose: bool = True):
    """Replaces, in place, every torch.nn.Conv2d (zeros padding), ReLU and CrossEntropyLoss inside `model`
    (including `model` itself) by its pixelops.nn counterpart and returns `model`.

    Each module changes class in place, so it keeps its very Parameter objects (an optimizer built before
    the swap goes on stepping them), buffers, hooks, state_dict keys and its place in every container.
    Modules pixelops cannot run (padding_mode="reflect", dtypes without kernels, subclasses with their own
    forward) are left as they are. What was swapped and what was left, and why, is printed when `verbose`
    and kept as `model.pixelops_swap_report` (a SwapReport)."""
    report = SwapReport()
    for name, module in model.named_modules():
        name = name or "(model)"
        row = _BY_TYPE.get(type(module))
        if row is None:
            if isinstance(module, _TORCH_TYPES) and not isinstance(module, _PIXELOPS_TYPES):
                base = next(t for t in _TORCH_TYPES if isinstance(module, t))
                report.left.append((name, type(module).__name__,
                                    f"a subclass of torch.nn.{base.__name__} with its own code; swap only "
                                    f"replaces torch.nn.{base.__name__} itself"))
            continue
        reason = row.why_not(module)
        if reason is not None:
            report.left.append((name, _describe(module), reason))
            continue
        was = _describe(module)
        module.__class__ = row.module
        report.swapped.append((name, was, f"pixelops.nn.{row.module.__name__}"))
    model.pixelops_swap_report = report
    if verbose:
        print(report, file=sys.stderr)
    return model


def _describe(module) -> str:
    return f"torch.nn.{type(module).__name__}({module.extra_repr()})"
