# `make run` and `make test` set up everything they need in .venv on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/swarmstation up

lint: $(STAMP)
	$(BIN)/ruff check swarmstation tests
	$(BIN)/ruff format --check swarmstation/domain

typecheck: $(STAMP)
	$(BIN)/mypy swarmstation
	$(BIN)/mypy --strict swarmstation/domain

test: lint typecheck
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/swarmstation bench --workers 16 --jobs 2000

clean:
	rm -rf $(VENV) .swarmstation .pytest_cache .mypy_cache .ruff_cache
