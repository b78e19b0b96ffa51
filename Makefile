# One entry point. `make test` and `make demo` build .venv from nothing (pinned by constraints.txt).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test test-slow demo bench clean chromium

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (Python >= 3.11 required; set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[cpu,train,dev,serve,ray]'
	# type stubs for the TensorRT code (mypy runs in the tests); --no-deps: they name tensorrt,
	# which only NVIDIA's index has
	$(BIN)/pip install --quiet --no-deps -c constraints.txt tensorrt-stubs
	touch $(STAMP)

# pytest includes tests/test_layers.py: the import-linter contracts of pyproject.toml (DESIGN.md's
# one-way dependencies) on the package as installed
# The search page's browser tests need a Chromium: Debian's is installed where we may (root, apt).
# Without one they skip, saying so.
CHROMIUM := $(firstword $(wildcard /usr/lib/chromium/chromium /usr/bin/chromium /usr/bin/chromium-browser))
chromium:
	@if [ -z "$(CHROMIUM)" ] && [ -z "$$JEMC_CHROMIUM" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    export DEBIAN_FRONTEND=noninteractive; \
	    { apt-get install -y -qq chromium >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium >/dev/null 2>&1; }; } \
	      && echo "installed Debian's chromium (for the search page's browser tests)" \
	      || echo "note: chromium could not be installed: the browser tests will skip"; \
	  else echo "note: no Chromium (apt-get install -y chromium, or set JEMC_CHROMIUM): the browser tests will skip"; fi; fi

test: $(STAMP) chromium
	$(BIN)/ruff check jemc_infer train export engines tests benchmarks scripts
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

# The main job on the embedded default: a synthetic world of 300 videos whose right answers are
# known → backbones trained on its train split → features → JEMC and single-stream models →
# ONNX export → the held-out videos embedded → example queries and held-out figures (README).
# A rerun reuses what is built; `make clean` starts over.
demo: $(STAMP)
	$(BIN)/jemc-infer demo --out demo

bench: $(STAMP)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[cpu,train,dev,bench]'
	$(BIN)/python benchmarks/train_throughput.py
	$(BIN)/python benchmarks/engines_cpu.py
	$(BIN)/python benchmarks/text_encoder.py
	$(BIN)/python benchmarks/search_cpu.py --sizes 100000
	$(BIN)/python benchmarks/query_cold_start.py

clean:
	rm -rf $(VENV) demo table1-runs
