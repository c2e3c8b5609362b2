#!/usr/bin/env bash
# The whole GPU check in one call (see DEVELOPERS.md, "GPU"): build the extension for this
# card, run the CUDA tests, run the small cases under compute-sanitizer, run the GPU benchmarks,
# and write logs, the raw JSON and a markdown table to $OUT. Meant for a machine with no
# network whose python3 has torch with CUDA, cmake, ninja, pybind11, pytest, pytest-benchmark.
#
#   OUT=/tmp/gpu-out bash benchmarks/gpu/run.sh            # everything (stages time-boxed)
#   STAGES="build test sanitize" bash benchmarks/gpu/run.sh   # a subset
#   STAGES=bench BENCH_FILTER="int8" bash benchmarks/gpu/run.sh   # benchmarks matching -k
# With the device tool (10 minutes a call, 15 a session): first call "build test sanitize"
# (about 5 minutes), second call on the still-warm machine "bench" (the in-place build stays).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
STAGES=${STAGES:-"build test sanitize bench"}
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
status=0
stage() { [[ " $STAGES " == *" $1 "* ]]; }
say() { echo "== $(date +%T) $*" | tee -a "$OUT/summary.txt"; }

nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total,clocks.sm,clocks.max.sm \
  --format=csv | tee "$OUT/gpu.txt"
card=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr ' ' '-' | tr -cd 'A-Za-z0-9._-')
cc=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d '. ')
# Only this card's architecture: a quick build (CI builds every architecture).
if [ "$cc" = "90" ]; then export CUDAARCHS="90a-real"; else export CUDAARCHS="${cc}-real"; fi
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$OUT/summary.txt"

if stage build; then
  say "build (CUDAARCHS=$CUDAARCHS)"
  # In place: the tests and benchmarks import this tree. No network here, so no build isolation.
  PYFASTCNN_CUDA=1 CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) timeout 240 \
    $PY setup.py build_ext --inplace >"$OUT/build.log" 2>&1 || { say "BUILD FAILED"; tail -40 "$OUT/build.log"; exit 1; }
  grep -E "warning|error" "$OUT/build.log" | grep -v "^--" | head -20
  $PY -c "import pyfastcnn; print(pyfastcnn.config()['cuda'])" | tee -a "$OUT/summary.txt"
fi

if stage test; then
  say "CUDA tests"
  timeout 180 $PY -m pytest tests/test_cuda*.py -q -p no:cacheprovider --timeout 60 -rs >"$OUT/tests.log" 2>&1 || status=1
  tail -25 "$OUT/tests.log"
fi

if stage sanitize; then
  say "compute-sanitizer (memcheck) on the small cases"
  timeout 150 compute-sanitizer --tool memcheck --error-exitcode 3 \
    $PY -m pytest tests -m gpu_sanitize -q -p no:cacheprovider >"$OUT/sanitize.log" 2>&1 || status=1
  grep -E "ERROR SUMMARY|passed|failed|Invalid|out of bounds" "$OUT/sanitize.log" | tail -8
fi

if stage bench; then
  say "GPU benchmarks"
  timeout 420 $PY -m pytest benchmarks/gpu -q -p no:cacheprovider ${BENCH_FILTER:+-k "$BENCH_FILTER"} \
    --benchmark-json="$OUT/gpu.json" --benchmark-disable-gc --benchmark-columns=median \
    >"$OUT/bench.log" 2>&1 || status=1
  tail -5 "$OUT/bench.log"
  $PY benchmarks/gpu/report.py "$OUT/gpu.json" -o "$OUT/gpu-$card.md" || status=1
fi
say "done, status $status"
exit $status
