#!/usr/bin/env bash
# The GPU check: every test marked gpu/tensorrt, then the GPU benchmarks, in one call (< 10 min),
# ending with a table: one line per step (status, seconds, its tests' or goals' summary).
# Run on a lent GPU machine from the repository root, after `scripts/gpu_wheels.sh` here filled
# .whl/ (carried along): the machine has Python 3.12 + torch but no network and not all of our
# dependencies. The project runs as users install it — its wheel, as CI builds and installs it —
# never from the source tree (the package-dir mapping train/ → jemc_infer.train needs an install).
set -euo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
if ! ls .whl/jemc_infer-*.whl >/dev/null 2>&1; then
  echo "error: .whl/jemc_infer-*.whl | missing | expected: run scripts/gpu_wheels.sh on the development machine and carry .whl" >&2
  exit 1
fi
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site
# pycuda (the TensorRT engine, the top-k kernel): build it from the carried sdist where it is missing
if ! python3 -c "import pycuda.driver" 2>/dev/null; then
  python3 -m pip install -q --no-index --find-links .whl --no-cache-dir --target /tmp/site pycuda 2>&1 | tail -5 \
    || echo "pycuda: the build failed; the GPU top-k tests will fail below" >&2
fi
mkdir -p "$HOME/.cache/jemc-infer/cuda" && cp .whl/cubin/*.cubin "$HOME/.cache/jemc-infer/cuda/" 2>/dev/null || true
export PYTHONSAFEPATH=1  # never put the working directory (the source tree's jemc_infer/) on sys.path
where=$(cd /tmp && python3 -c "import jemc_infer; print(jemc_infer.__file__)")
case "$where" in /tmp/site/*) ;; *) echo "error: jemc_infer | imported from $where | expected /tmp/site" >&2; exit 1 ;; esac
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
# Every step runs whatever the ones before it did (one failure must not cost the card's other
# answers); each one's status and time go in the table printed last.
: > "$OUT/summary.txt"
step() {  # step NAME LOG COMMAND...
  local name=$1 log=$2 start rc
  shift 2
  start=$(date +%s)
  set +e
  "$@" 2>&1 | tee "$OUT/$log"
  rc=${PIPESTATUS[0]}
  set -e
  printf '%-22s %-6s %5ss  %s\n' "$name" "$([ "$rc" = 0 ] && echo ok || echo FAIL:$rc)" "$(( $(date +%s) - start ))" \
    "$(grep -E '(passed|failed|error).* in [0-9.]+s|^goals:' "$OUT/$log" | tail -1 | cut -c1-120 || true)" >> "$OUT/summary.txt"
}
step "gpu tests" tests.log python3 -m pytest -q -p no:cacheprovider -m "gpu or tensorrt" tests
step "train throughput" bench.log python3 benchmarks/train_throughput.py --device cuda --videos 2000 --json "$OUT/train_throughput_cuda.json"
step "features pipeline" features_cuda.log python3 benchmarks/features_pipeline.py throughput --device cuda --clips 8 --seconds 10 --workers 8
step "engines" engines_gpu.log python3 benchmarks/engines_gpu.py
step "top-k search" search_gpu.log python3 benchmarks/search_gpu.py --rows 10000000 --json "$OUT/search_gpu.json"
echo
echo "GPU check on $(cat "$OUT/gpu.txt")"
cat "$OUT/summary.txt"
! grep -q FAIL "$OUT/summary.txt"
