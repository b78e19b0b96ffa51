#!/usr/bin/env bash
# Fill .whl/ with what scripts/gpu_check.sh installs on a lent GPU machine (Python 3.12, no network):
# this project's wheel, built exactly as CI builds the one it installs (tests/test_packaging.py),
# and the cp312 wheels of the dependencies that machine lacks (PyAV; onnxconverter-common for the
# fp16 export). Run here, from anywhere in the checkout; then name .whl in the device call's carry.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
rm -rf .whl && mkdir .whl
rm -rf build ./*.egg-info  # setuptools packs whatever build/lib holds: never let a stale file in
"$PY" -m pip wheel --no-deps -q -w .whl .
pins=$(grep -iE '^(av|onnxconverter-common)==' constraints.txt)
# shellcheck disable=SC2086 - one argument per pin
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl $pins
ls -1 .whl
du -sh .whl
