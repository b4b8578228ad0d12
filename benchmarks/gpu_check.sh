#!/usr/bin/env bash
# The whole GPU check in one call on a CUDA machine (the device tool's machine, or any box with a GPU):
# build with CUDA for the local GPU only, run the CUDA tests, run the CUDA benchmark suite, and write the
# logs and the JSON under $OUT (or ./gpu-check-out when OUT is unset).
#
#   bash benchmarks/gpu_check.sh              # everything
#   OPS=relu,conv2d bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-check-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}

nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
ARCH=$("$PY" -c "import torch; p = torch.cuda.get_device_capability(); print(f'{p[0]}{p[1]}')" 2>/dev/null || echo 90)

# Build only for this GPU: the default (80;90) doubles the compile time.
start=$(date +%s)
"$PY" -m pip install --no-build-isolation --no-deps -q . \
  -Ccmake.define.PIXELOPS_CUDA=ON -Ccmake.define.PIXELOPS_CUDA_ARCHS="$ARCH" -Cbuild-dir=/tmp/pixelops-build \
  2>&1 | tee "$OUT/build.log" || { echo "build failed"; exit 1; }
echo "build: $(( $(date +%s) - start )) s for sm_$ARCH" | tee -a "$OUT/build.log"

cd /tmp  # import the installed package, not the source tree
"$PY" -c "import pixelops; print(pixelops.available_backends())" | tee "$OUT/backends.txt"

# Tests: the CUDA ones (marked) first, then the rest, so a GPU failure shows early in the log.
"$PY" -m pytest "$OLDPWD/tests" -q -m cuda --maxfail=25 --no-header -p no:cacheprovider 2>&1 | tee "$OUT/tests-cuda.log"
tests_rc=${PIPESTATUS[0]}

"$PY" -m pixelops bench --device cuda ${OPS:+--ops "$OPS"} --json "$OUT/bench-cuda.json" 2>&1 | tee "$OUT/bench-cuda.log"
bench_rc=${PIPESTATUS[0]}

# The training demo on the GPU beside torch (loss agreement, accuracy, time ratio); informative, not in rc.
"$PY" -m pixelops train-mnist --device cuda --compare 2>&1 | tee "$OUT/train-mnist-cuda.log"

echo "cuda tests rc=$tests_rc, bench rc=$bench_rc"
exit $(( tests_rc || bench_rc ))
