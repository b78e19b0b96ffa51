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

# pytest includes tests/test_layers.py: the import-linter contracts of pyproject.toml (DESIGN.md's
# one-way dependencies) on the package as installed
test: $(STAMP)
	$(BIN)/ruff check jemc_infer train export engines tests benchmarks scripts
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

# The main job on the embedded default: a small model trained on synthetic features, exported with
# its backbones (random weights: pretrained ones cannot be downloaded here, so the rankings show
# the machinery, not real retrieval), sample videos embedded into an index, then a query.
demo: $(STAMP)
	$(BIN)/jemc-infer data synth --out demo/data --train 600 --val 100 --test 200
	$(BIN)/jemc-infer train --data demo/data --preset jemc --out demo/model --epochs 5 --lr 1e-3 --embed-dim 256 --word-dim 128 --quiet --restart
	$(BIN)/jemc-infer export demo/model --random-init --max-batch 16 --max-seq 32
	$(BIN)/python scripts/demo_videos.py demo/videos
	rm -rf demo/index  # the model was just retrained: a fresh index (an index refuses another model's rows)
	$(BIN)/jemc-infer embed demo/videos --index demo/index --model demo/model
	$(BIN)/jemc-infer query "a man is cooking in a kitchen" --index demo/index --model demo/model -k 5

bench: $(STAMP)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[cpu,train,dev,bench]'
	$(BIN)/python benchmarks/train_throughput.py
	$(BIN)/python benchmarks/engines_cpu.py
	$(BIN)/python benchmarks/search_cpu.py --sizes 100000
	$(BIN)/python benchmarks/query_cold_start.py

clean:
	rm -rf $(VENV) demo table1-runs
