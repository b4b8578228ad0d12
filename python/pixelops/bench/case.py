"""What one benchmark row is: an op on one shape and device, PyTorch's version of it and pixelops'."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional


@dataclass
class Case:
    op: str                                  # the op's name, as in --ops
    name: str                                # what is timed, e.g. "fwd" or "fwd+bwd"
    shape: str                               # printed as is
    device: str                              # "cpu" or "cuda"
    setup: Callable[[], Any]                 # builds the inputs once (random, never zeros)
    torch_fn: Callable[[Any], Any]           # PyTorch's way, called with setup()'s result
    ours_fn: Callable[[Any], Any]            # pixelops' way
    error: Callable[[Any], float]            # relative error of pixelops against a float64 reference
    bytes: Optional[int] = None              # fewest bytes the op must move (for GB/s)
    flops: Optional[int] = None              # arithmetic it must do (for TFLOP/s)
    flush_cache: bool = True                 # flush the L2 between timed calls (memory-bound, GPU)
    host_bound: bool = False                 # time many calls back to back on the host clock (per-call overhead)
    ceiling: Optional[str] = None            # "copy": also print the fraction of measured copy bandwidth
    notes: dict = field(default_factory=dict)
    torch_scale: float = 1.0                 # torch_fn does 1/torch_scale of the work (a slow reference): its time is scaled back
    repeats: Optional[int] = None            # timed samples per side when --repeats is not given (slow cases take fewer)
    tf32: Optional[bool] = None              # torch.backends.cudnn.allow_tf32 while the case runs (None: as found)


def rel_error(ours, ref) -> float:
    """||ours - ref|| / ||ref|| computed in float64 (torch tensors or numpy arrays)."""
    import torch

    ours = torch.as_tensor(ours).detach().double().cpu()
    ref = torch.as_tensor(ref).detach().double().cpu()
    if ours.shape != ref.shape:
        return float("inf")
    denom = ref.norm().item()
    diff = (ours - ref).norm().item()
    return diff / denom if denom > 0 else diff
