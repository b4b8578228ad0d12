"""What the CUDA kernels compiled to, without a GPU: per kernel, its SASS instruction count and the opcodes that
say most about speed (FFMA / HMMA for the arithmetic; LDS / LDSM for shared-memory loads against LD / ST, the
generic ones that nvcc emits where it cannot tell that an address is in shared memory; LDL / STL for spills).

    pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm   # the disassembler, if the CUDA toolkit lacks it
    python benchmarks/sass_report.py [--binary python/pixelops/_C*.so] [kernel name regex]

It reads the module's embedded cubins (cuobjdump -sass, which runs nvdisasm). A kernel's instruction count is
static: every path of it, once; loops are not multiplied out.
"""
from __future__ import annotations

import argparse
import collections
import glob
import os
import re
import shutil
import subprocess
import sys
import sysconfig

SHOWN = ("FFMA", "HMMA", "LDS", "LDSM", "LD", "ST", "STS", "LDG", "STG", "LDL", "STL")


def tool(name: str) -> str | None:
    """name on PATH, or in the nvidia-cuda-* wheels' bin folder (site-packages/nvidia/cu*/bin)."""
    found = shutil.which(name)
    if found:
        return found
    site = sysconfig.get_paths()["purelib"]
    for path in sorted(glob.glob(os.path.join(site, "nvidia", "cu*", "bin", name))):
        return path
    return None


def kernels(sass: str):
    """(mangled name, opcode counts) per function in cuobjdump's SASS listing."""
    for block in re.split(r"\n\s*Function : ", sass)[1:]:
        name = block.split("\n", 1)[0].strip()
        ops = collections.Counter()
        for line in block.split("\n"):
            m = re.match(r"\s*/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z0-9_]+)", line)
            if m:
                ops[m.group(1)] += 1
        yield name, ops


def main(argv=None) -> int:
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pattern", nargs="?", default=".", help="regex on the kernels' mangled names")
    parser.add_argument("--binary", default=None, help="module or object file (default: the built _C module)")
    args = parser.parse_args(argv)
    binary = args.binary or next(iter(sorted(glob.glob(os.path.join(here, "python", "pixelops", "_C*.so")))), None)
    cuobjdump, nvdisasm = tool("cuobjdump"), tool("nvdisasm")
    if not binary or not cuobjdump or not nvdisasm:
        print("needs a built module (--binary) and cuobjdump and nvdisasm: "
              "pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm", file=sys.stderr)
        return 2
    env = dict(os.environ, PATH=os.path.dirname(nvdisasm) + os.pathsep + os.environ.get("PATH", ""))
    sass = subprocess.run([cuobjdump, "-sass", binary], capture_output=True, text=True, env=env, check=True).stdout
    pattern = re.compile(args.pattern)
    print(f"{'instr':>6} " + " ".join(f"{op:>5}" for op in SHOWN) + "  kernel")
    shown = 0
    for name, ops in kernels(sass):
        if pattern.search(name):
            short = re.sub(r"^_ZN8pixelops4cuda(4conv)?", "", name)[:120]
            print(f"{sum(ops.values()):6d} " + " ".join(f"{ops[op]:5d}" for op in SHOWN) + f"  {short}")
            shown += 1
    if not shown:
        print(f"no kernel of {binary} matches {args.pattern!r} (a build without CUDA has none)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
