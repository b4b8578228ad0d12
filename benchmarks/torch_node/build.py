"""Builds conv2d_node.cpp against the installed torch (torch.utils.cpp_extension, cached per torch version and
source) and attaches it to pixelops._C's kernels and to pixelops' differentiable backward (for
create_graph=True). An experiment's build: the package itself never links torch.

    from build import load, as_eager_apply; node = load(); node.conv2d(x, w, b, params)
    pixelops._torch.conv2d._conv2d_apply = as_eager_apply(node)   # the node as pixelops' eager autograd path
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
CSRC = HERE.parent.parent / "csrc"


def load(verbose: bool = False):
    import torch
    import torch.utils.cpp_extension as ext

    import pixelops._C as core
    from pixelops._torch.conv2d import _conv2d

    cuda = bool(core.built_with_cuda) and torch.cuda.is_available()
    tag = f"torch{torch.__version__}{'_cuda' if cuda else ''}_py{sys.version_info[0]}{sys.version_info[1]}"
    build_dir = Path(tempfile.gettempdir()) / f"pixelops_conv2d_node_{''.join(c if c.isalnum() else '_' for c in tag)}"
    build_dir.mkdir(parents=True, exist_ok=True)
    node = ext.load(
        name="pixelops_conv2d_node", sources=[str(HERE / "conv2d_node.cpp")],
        extra_include_paths=[str(CSRC)], extra_cflags=["-O3"] + (["-DPIXELOPS_NODE_CUDA"] if cuda else []),
        with_cuda=cuda, build_directory=str(build_dir), verbose=verbose)
    node.attach(core.entry_points, _conv2d.differentiable_backward)
    return node


def as_eager_apply(node):
    """The node with the signature of pixelops' eager conv2d Function (pixelops._torch.conv2d._conv2d_apply,
    which pixelops.conv2d and masked_conv2d call after their checks where a gradient is wanted)."""
    def apply(x, w, b, strides, pads, dilations, groups, ntaps, relu, tf32):
        return node.conv2d(x, w, b, [*strides, *pads, *dilations, groups, ntaps, int(relu), int(tf32)])
    return apply


if __name__ == "__main__":
    os.environ.setdefault("MAX_JOBS", str(os.cpu_count() or 2))
    print(load(verbose=True))
