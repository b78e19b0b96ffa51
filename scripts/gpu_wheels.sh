#!/usr/bin/env bash
# Fill .whl/ with what scripts/gpu_check.sh installs on a lent GPU machine (Python 3.12, no network):
# this project's wheel, built exactly as CI builds the one it installs (tests/test_packaging.py),
# and the cp312 wheels of the dependencies that machine lacks (PyAV; NumKong for the compact scan;
# onnxconverter-common for the fp16 export). Run here, from anywhere in the checkout; then name
# .whl in the device call's carry.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
rm -rf .whl && mkdir .whl
rm -rf build ./*.egg-info  # setuptools packs whatever build/lib holds: never let a stale file in
"$PY" -m pip wheel --no-deps -q -w .whl .
pins=$(grep -iE '^(av|numkong|onnxconverter-common)==' constraints.txt)
# shellcheck disable=SC2086 - one argument per pin
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl $pins
# pycuda is an sdist only: built on the GPU machine against its driver (gpu_check.sh), with its
# pure-Python dependencies from here.
"$PY" -m pip download -q --no-deps --no-binary pycuda -d .whl "pycuda==2026.1"
# shellcheck disable=SC2086
"$PY" -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
  pytools platformdirs mako markupsafe typing-extensions siphash24
# The top-k kernel's cubins for the lent cards (A100 sm_80, H100/H200 sm_90), built here by nvcc:
# the GPU machine may have no CUDA toolkit (jemc_infer.index.gpu takes a cached cubin then).
JEMC_CUDA_CACHE="$PWD/.whl/cubin" "$PY" -c "from jemc_infer.index.gpu import compile_cubin; [compile_cubin(a) for a in ('sm_80', 'sm_90')]"
ls -1 .whl
du -sh .whl
