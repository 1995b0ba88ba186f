# Everything installs itself: a fresh machine needs only python3 (3.10+) and make.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install browser test test-fast reliability bench demo demo-loop lint format clean

install: $(STAMP)

# The chain report is checked in a real headless browser (Debian's chromium).
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  (apt-get install -y -q chromium >/dev/null 2>&1 || \
	   (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1)) || \
	  echo "warning: could not install chromium; the report's browser test will fail"

# torch first, pinned: 2.13.0 is the CPU build available locally; any other
# request would pull gigabytes of CUDA wheels.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

test: install browser
	$(BIN)/python -m pytest -q -n 2 --durations=15

# The inner loop: everything but the heaviest end-to-end tests (marked slow; make test runs them).
test-fast: install
	$(BIN)/python -m pytest -q -n 2 -m 'not slow and not reliability and not bench' --durations=10

reliability: install
	$(BIN)/python -m pytest -q -m reliability

# A stale bench-results.json must not pass for this run's: delete it first.
bench: install
	rm -f bench-results.json
	$(BIN)/python -m pytest -q -s -m bench -p no:xdist tests

demo: install
	$(BIN)/python -m orchestrator.demo

# The same chain for a PyTorch loop of your own (examples/torch-loop, docs/your-own-loop.md).
demo-loop: install
	$(BIN)/python -m orchestrator.demo --example torch-loop --timesteps 3000 --out demo-loop-output

lint: install
	$(BIN)/ruff format --check orchestrator kernel_template tests
	$(BIN)/ruff check orchestrator kernel_template tests

format: install
	$(BIN)/ruff format orchestrator kernel_template tests
	$(BIN)/ruff check --fix orchestrator kernel_template tests

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
