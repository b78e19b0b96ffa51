#!/usr/bin/env bash
# The GPU check: every test marked gpu/tensorrt, then the GPU benchmarks, in one call (< 10 min).
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
python3 -m pytest -q -p no:cacheprovider -m "gpu or tensorrt" tests 2>&1 | tee "$OUT/tests.log"
python3 benchmarks/train_throughput.py --device cuda --videos 2000 --json "$OUT/train_throughput_cuda.json" 2>&1 | tee "$OUT/bench.log"
python3 benchmarks/features_pipeline.py throughput --device cuda --clips 8 --seconds 10 --workers 8 2>&1 | tee "$OUT/features_cuda.log"
python3 benchmarks/engines_gpu.py 2>&1 | tee "$OUT/engines_gpu.log"
python3 benchmarks/search_gpu.py --rows 10000000 --json "$OUT/search_gpu.json" 2>&1 | tee "$OUT/search_gpu.log"
