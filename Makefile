# Two commands on a fresh machine: `make demo` (the main job) and `make test` (the test suite).
# Both create .venv and install pinned dependencies; torch is pinned to the CPU build that this
# machine has on disk (pyproject.toml itself stays open to CUDA builds).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.ecgmae-installed
TORCH ?= torch==2.13.0
DEMO_OUT ?= runs/demo

.PHONY: install demo demo-fast test test-fast lint typecheck bench browser clean

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
	$(BIN)/ruff format --check src tests benchmarks

# mypy over src/ecgmae, configured in pyproject.toml ([tool.mypy]).
typecheck: $(STAMP)
	$(BIN)/mypy

# The browser test (tests/test_serve_browser.py) drives Debian's chromium; install it when we can (root with
# apt-get), otherwise say so and let the test skip with its reason.
browser:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing chromium + chromium-driver for the browser test (apt-get)"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver \
			>/dev/null) || echo "make: could not install chromium; the browser test will be skipped"; \
	else echo "make: chromium/chromedriver not found and not root; the browser test will be skipped"; fi

test: $(STAMP) lint typecheck browser
	$(BIN)/python -m pytest -x -q

# The edit loop: lint + every test not marked slow (the end-to-end runs, subprocess training, the browser).
test-fast: $(STAMP) lint
	$(BIN)/python -m pytest -x -q -m "not slow"

bench: $(STAMP)
	$(BIN)/python benchmarks/throughput.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache .mypy_cache
