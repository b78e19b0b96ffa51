# One entry point. `make test` and `make demo` build .venv from nothing (pinned by constraints.txt).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test test-slow demo bench clean

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (Python >= 3.11 required; set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[cpu,train,dev]'
	# type stubs for the TensorRT code (mypy runs in the tests); --no-deps: they name tensorrt,
	# which only NVIDIA's index has
	$(BIN)/pip install --quiet --no-deps -c constraints.txt tensorrt-stubs
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/ruff check jemc_infer train export engines tests benchmarks
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

# The main job (embed + query) arrives with the embed/query issue; until then the demo trains the
# final JEMC configuration on a small synthetic dataset (small sizes, lr 1e-3: about a minute) and
# evaluates it.
demo: $(STAMP)
	$(BIN)/jemc-infer data synth --out demo/data --train 600 --val 100 --test 200
	$(BIN)/jemc-infer train --data demo/data --preset jemc --out demo/model --epochs 5 --lr 1e-3 --embed-dim 256 --word-dim 128 --quiet --restart
	$(BIN)/jemc-infer evaluate --model demo/model --data demo/data --split test

bench: $(STAMP)
	$(BIN)/python benchmarks/train_throughput.py

clean:
	rm -rf $(VENV) demo table1-runs
