# Two commands on a fresh machine: `make demo` (the main job) and `make test` (the test suite).
# Both create .venv and install pinned dependencies; torch is pinned to the CPU build that this
# machine has on disk (pyproject.toml itself stays open to CUDA builds).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.ecgmae-installed
TORCH ?= torch==2.13.0
DEMO_OUT ?= runs/demo

.PHONY: install demo demo-fast test test-all lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(TORCH) -c constraints.txt
	$(BIN)/python -m pip install -q -e '.[dev]' -c constraints.txt
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/ecgmae demo --out $(DEMO_OUT)

demo-fast: $(STAMP)
	$(BIN)/ecgmae demo --out $(DEMO_OUT) --fast

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

test: $(STAMP) lint
	$(BIN)/python -m pytest -x -q

bench: $(STAMP)
	$(BIN)/python benchmarks/throughput.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
