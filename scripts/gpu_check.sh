#!/usr/bin/env bash
# The GPU check: every test marked gpu/tensorrt, then the GPU benchmarks, in one call (< 10 min).
# Run on a lent GPU machine from the repository root. That machine has Python 3.12 + torch but not
# all of our dependencies: wheels for the missing ones travel in .whl/ (see README, "GPU check").
set -euo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
# run from the source tree: the package-dir mapping (train/ → jemc_infer.train) needs an install
python3 -m pip install -q --no-deps --no-build-isolation --target /tmp/jemc . >/dev/null
export PYTHONPATH=/tmp/jemc:${PYTHONPATH}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -m pytest -q -p no:cacheprovider -m "gpu or tensorrt" tests 2>&1 | tee "$OUT/tests.log"
python3 benchmarks/train_throughput.py --device cuda --videos 2000 --json "$OUT/train_throughput_cuda.json" 2>&1 | tee "$OUT/bench.log"
python3 benchmarks/features_pipeline.py throughput --device cuda --clips 8 --seconds 10 --workers 8 2>&1 | tee "$OUT/features_cuda.log"
python3 benchmarks/engines_gpu.py 2>&1 | tee "$OUT/engines_gpu.log"
