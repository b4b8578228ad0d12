"""The conv2d CUDA kernels' index math (loaders, epilogues, direct kernel; the halo kernels' packing,
slots and mma fragments; the pointwise weight gradient's staging and fragments), run on the host against naive loops,
and the bookkeeping of the CUDA workspaces' arena: tests/cuda_host/*_emulation.cpp compiled as plain C++. Runs without a GPU, so CI checks what the
CUDA tests can only check where a GPU is lent."""
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CXX = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")


SOURCES = ["conv2d_emulation.cpp", "conv2d_halo_emulation.cpp", "conv2d_halo_grad_weight_emulation.cpp",
           "conv2d_pointwise_grad_weight_emulation.cpp", "workspace_arena_emulation.cpp"]
# Random cases a run of each emulation's fuzz mode (`prog fuzz <count> <seed>`) takes: a few seconds each here.
# Offline runs of thousands of cases a seed found nothing; these keep a fixed sample of the same draws in CI.
FUZZ_CASES = {"conv2d_emulation.cpp": 100, "conv2d_halo_emulation.cpp": 300,
              "conv2d_halo_grad_weight_emulation.cpp": 60, "conv2d_pointwise_grad_weight_emulation.cpp": 20,
              "workspace_arena_emulation.cpp": 200}
needs_compiler = pytest.mark.skipif(CXX is None or not os.path.isdir(os.path.join(ROOT, "csrc")),
                                    reason="needs a C++17 compiler and the source tree")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Each emulation compiled once for this module: source name -> executable."""
    out, exes = tmp_path_factory.mktemp("cuda_host"), {}

    def get(source):
        if source not in exes:
            exe = out / source.replace(".cpp", "")
            build = subprocess.run([CXX, "-std=c++17", "-O1", "-Wall", "-Wno-unknown-pragmas",
                                    "-I", os.path.join(ROOT, "tests", "cuda_host"), "-I", os.path.join(ROOT, "csrc"),
                                    os.path.join(ROOT, "tests", "cuda_host", source), "-o", str(exe)],
                                   capture_output=True, text=True)
            assert build.returncode == 0, build.stderr[-4000:]
            exes[source] = exe
        return exes[source]

    return get


def _run(exe, *args):
    run = subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=120)
    sys.stdout.write(run.stdout)
    assert run.returncode == 0, "\n".join(l for l in run.stdout.splitlines() if l.startswith("FAIL"))
    return run.stdout


@needs_compiler
@pytest.mark.parametrize("source", SOURCES)
def test_conv2d_cuda_index_math_on_host(built, source):
    assert "all passed" in _run(built(source))


@needs_compiler
@pytest.mark.parametrize("source", SOURCES)
def test_conv2d_cuda_index_math_on_random_cases(built, source):
    _run(built(source), "fuzz", str(FUZZ_CASES[source]), "2026")
