"""A pytest plugin that runs pixelops' tests with the C++ node as conv2d's eager autograd path, in place of the
Python Function (pixelops._torch.conv2d._conv2d_apply): the same tests, the same kernels, the other node.

    PYTHONPATH=python:benchmarks/torch_node python -m pytest tests -p pytest_node

It prints how many calls went through the node, so that a run that never reached it shows.
"""
from __future__ import annotations

from build import as_eager_apply, load

_calls = 0


def pytest_configure(config):
    import pixelops._torch.conv2d as torch_conv2d

    node_apply = as_eager_apply(load())

    def apply(*args):
        global _calls
        _calls += 1
        return node_apply(*args)

    torch_conv2d._conv2d_apply = apply


def pytest_terminal_summary(terminalreporter):
    terminalreporter.write_line(f"conv2d calls through the C++ node: {_calls}")
