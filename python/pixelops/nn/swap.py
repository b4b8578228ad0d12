"""pixelops.swap(model): every torch.nn module that pixelops has a drop-in for, turned into it in place."""
from __future__ import annotations

import collections
import sys
from dataclasses import dataclass, field

import torch

from .dropins import TABLE
from .modules import Conv2d, CrossEntropyLoss, FusedReLU, MaskedConv2d, ReLU

_BY_TYPE = {row.torch_module: row for row in TABLE}
_TORCH_TYPES = tuple(_BY_TYPE)
_OURS = (Conv2d, MaskedConv2d, ReLU, CrossEntropyLoss)  # and their subclasses (FusedReLU; a parametrized Conv2d)
_CONVS = (Conv2d, MaskedConv2d)


@dataclass
class SwapReport:
    swapped: list = field(default_factory=list)   # (module name, what it was, what it is now)
    left: list = field(default_factory=list)      # (module name, what it is, why it was left)
    fused: list = field(default_factory=list)     # (conv name, ReLU name): the ReLU runs in the conv's output write

    def __str__(self):
        head = f"pixelops.swap: {len(self.swapped)} module(s) swapped, {len(self.left)} left"
        lines = [head + (f", {len(self.fused)} ReLU(s) fused" if self.fused else "")]
        lines += [f"  swapped {name}: {was} -> {now}" for name, was, now in self.swapped]
        lines += [f"  fused   {relu}: into {conv} (activation='relu')" for conv, relu in self.fused]
        lines += [f"  left    {name}: {what}: {why}" for name, what, why in self.left]
        return "\n".join(lines)


def swap(model, *, verbose: bool = True, fuse_relu: bool = False):
    """Replaces, in place, every torch.nn.Conv2d, ReLU and CrossEntropyLoss inside `model`
    (including `model` itself) by its pixelops.nn counterpart and returns `model`.

    Each module changes class in place, so it keeps its very Parameter objects (an optimizer built before
    the swap goes on stepping them), buffers, hooks, state_dict keys and its place in every container.
    Modules pixelops cannot run (dtypes without kernels, subclasses with their own forward) are left as they
    are. What was swapped and what was left, and why, is printed when `verbose`
    and kept as `model.pixelops_swap_report` (a SwapReport).

    fuse_relu=True also moves each ReLU that directly follows a convolution in an nn.Sequential (one that runs
    Sequential's own forward) into that convolution (activation="relu": bias and ReLU in its output write, the
    ReLU's gradient in its backward), and the ReLU becomes a FusedReLU that passes its input on: one layer and
    one pass over the activations fewer, forward and backward. The model's results are the same; what changes
    is what the conv module itself returns: its output with the ReLU applied, wherever it is called (on its own,
    in a slice of the Sequential such as model[:1], or seen by a hook added later). So a pair with hooks on
    either module is left unfused (and reported), as is a pair where either module is registered in more than
    one place in `model`, and every pair while a module hook registered for all modules is in force. What swap
    cannot see is yours to rule out: the conv or the ReLU called from outside `model` (another model sharing it)
    or by a forward that reaches into the Sequential (model.body[1](...)). Any swap turns a FusedReLU that no
    longer follows its fused conv (model surgery since the fusion) back into a ReLU."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"pixelops.swap: 'model' must be a torch.nn.Module, got {type(model).__name__}")
    report = SwapReport()
    for name, module in model.named_modules():
        name = name or "(model)"
        row = _BY_TYPE.get(type(module))
        if row is None:
            # pixelops' own modules (swapped before, MaskedConv2d, and subclasses of them such as the class torch's
            # parametrizations make of a swapped conv) need nothing; other subclasses are reported
            if isinstance(module, _TORCH_TYPES) and not isinstance(module, _OURS):
                base = next(t for t in _TORCH_TYPES if isinstance(module, t))
                report.left.append((name, type(module).__name__,
                                    f"a subclass of torch.nn.{base.__name__} with its own code; swap only "
                                    f"replaces torch.nn.{base.__name__} itself"))
            continue
        # a forward set on the instance (a wrapper, a logging hook) would go on calling what it wrapped
        reason = "a forward of its own set on the instance" if "forward" in vars(module) else row.why_not(module)
        if reason is not None:
            report.left.append((name, _describe(module), reason))
            continue
        was = _describe(module)
        module.__class__ = row.module
        report.swapped.append((name, was, f"pixelops.nn.{row.module.__name__}"))
    _unfuse_orphans(model, report)
    if fuse_relu:
        _fuse_relus(model, report)
    model.pixelops_swap_report = report
    if verbose:
        print(report, file=sys.stderr)
    return model


def _describe(module) -> str:
    where = "pixelops.nn" if type(module).__module__.startswith("pixelops.") else "torch.nn"
    return f"{where}.{type(module).__name__}({module.extra_repr()})"


def _hooked(module) -> bool:
    return any(getattr(module, name, None) for name in (
        "_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"))


def _global_hooks() -> bool:
    """Whether a module hook registered for every module (torch.nn.modules.module.register_module_forward_hook
    and its kin) is in force: it would see each fused conv's output rectified."""
    from torch.nn.modules import module as m
    return any(getattr(m, name, None) for name in (
        "_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks", "_global_backward_pre_hooks"))


def _plain_sequential(module) -> bool:
    """An nn.Sequential that runs Sequential's own forward: a subclass with a forward of its own, or one given a
    forward on the instance, may use its children otherwise."""
    return (isinstance(module, torch.nn.Sequential) and type(module).forward is torch.nn.Sequential.forward
            and "forward" not in vars(module))


def _unfuse_orphans(model, report: SwapReport):
    """Each FusedReLU that no longer follows a conv fused with it (the conv was replaced, or the ReLU moved:
    model surgery after an earlier swap) back into a ReLU, which fuse_relu may pair again: passing its input
    on, it would drop the ReLU."""
    after = {}  # id of a FusedReLU -> whether every place it sits in follows a fused conv
    for _, parent in model.named_modules():
        children = list(parent._modules.values())
        for k, child in enumerate(children):
            if type(child) is FusedReLU:
                prev = children[k - 1] if k > 0 else None
                ok = (_plain_sequential(parent) and isinstance(prev, _CONVS) and prev.activation == "relu")
                after[id(child)] = after.get(id(child), True) and ok
    for name, module in model.named_modules():
        if type(module) is FusedReLU and not after.get(id(module), False):
            module.__class__ = ReLU
            report.swapped.append((name or "(model)", "pixelops.nn.FusedReLU()",
                                   "pixelops.nn.ReLU (its conv is fused no more)"))


def _fuse_relus(model, report: SwapReport):
    """fuse_relu: each (pixelops conv, pixelops ReLU) pair of consecutive children of an nn.Sequential, each of
    the two registered in one place only (a ReLU module shared by two layers, or a conv reused elsewhere, would
    take the fusion to places without the other)."""
    uses = collections.Counter(id(m) for _, m in model.named_modules(remove_duplicate=False))
    global_hooks = _global_hooks()
    for seq_name, seq in model.named_modules():
        if not _plain_sequential(seq):
            continue
        children = list(seq._modules.items())  # as forward runs them (a module listed twice appears twice)
        for (conv_name, conv), (relu_name, relu) in zip(children, children[1:]):
            if type(conv) not in (Conv2d, MaskedConv2d) or conv.activation is not None or type(relu) is not ReLU:
                continue
            conv_name = f"{seq_name}.{conv_name}" if seq_name else conv_name
            relu_name = f"{seq_name}.{relu_name}" if seq_name else relu_name
            if _hooked(conv) or _hooked(relu) or global_hooks:
                report.left.append((relu_name, _describe(relu), f"not fused into {conv_name}: hooks on one of "
                                    "them (or on every module) would see other tensors"))
                continue
            if uses[id(conv)] > 1 or uses[id(relu)] > 1:
                report.left.append((relu_name, _describe(relu), f"not fused into {conv_name}: one of them is "
                                    "used in more than one place"))
                continue
            conv.activation = "relu"
            relu.__class__ = FusedReLU
            report.fused.append((conv_name, relu_name))
