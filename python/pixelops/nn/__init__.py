"""pixelops in PyTorch training loops: torch.nn modules on pixelops' kernels, swap() and patch().

    model = pixelops.swap(model)     # in place: Conv2d, ReLU, CrossEntropyLoss become pixelops.nn's
                                     # (fuse_relu=True: a Conv2d's ReLU after it in a Sequential, into the conv)
    with pixelops.patch():           # torch.nn.functional.conv2d / relu / cross_entropy run pixelops
        ...
"""
from .._torch_loader import load_all as _load_all

_load_all()  # register every pixelops:: custom op before anything is compiled

from .dropins import TABLE  # noqa: E402
from .modules import Conv2d, CrossEntropyLoss, FusedReLU, MaskedConv2d, ReLU  # noqa: E402
from .patch import is_patched, patch, unpatch  # noqa: E402
from .swap import SwapReport, swap  # noqa: E402

__all__ = ["Conv2d", "MaskedConv2d", "ReLU", "FusedReLU", "CrossEntropyLoss", "swap", "SwapReport", "patch",
           "unpatch", "is_patched", "TABLE"]
