# `make run` and `make test` set up everything they need in .venv on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck bench clean lock

# Installs exactly what requirements.lock pins (with hashes), then this package without resolving
# again; `make lock` regenerates the lock from pyproject.toml's ranges.
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

lock: $(STAMP)
	$(BIN)/pip install --quiet uv
	$(BIN)/uv pip compile pyproject.toml --extra dev --generate-hashes --no-header \
	  --python-version 3.11 --python-platform x86_64-manylinux_2_28 -o requirements.lock

run: $(STAMP)
	$(BIN)/swarmstation up

lint: $(STAMP)
	$(BIN)/ruff check swarmstation tests
	$(BIN)/ruff format --check swarmstation/domain

typecheck: $(STAMP)
	$(BIN)/mypy swarmstation
	$(BIN)/mypy --strict swarmstation/domain

# The local Ethereum node and Solidity compiler the chain tests use (tests/chain/harness.py).
CHAIN_STAMP := tests/chain/node_modules/.installed
$(CHAIN_STAMP): tests/chain/package.json tests/chain/package-lock.json
	cd tests/chain && npm ci --no-audit --no-fund
	touch $(CHAIN_STAMP)

test: lint typecheck $(CHAIN_STAMP)
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/swarmstation bench --workers 16 --jobs 2000

clean:
	rm -rf $(VENV) .swarmstation .pytest_cache .mypy_cache .ruff_cache tests/chain/node_modules
