# `make run` and `make test` set up everything they need in .venv on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck bench clean lock studio openapi web-check chromium

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

# The web studio (web/): npm packages from the committed lock, built into swarmstation/studio_dist
# (packaged with the Python package) whenever its sources changed.
WEB_STAMP := web/node_modules/.installed
$(WEB_STAMP): web/package.json web/package-lock.json
	cd web && npm ci --no-audit --no-fund
	touch $(WEB_STAMP)

STUDIO := swarmstation/studio_dist/index.html
WEB_SOURCES := $(shell find web/src web/public -type f 2>/dev/null) web/index.html web/vite.config.ts \
  web/tsconfig.json web/scripts/sizes.mjs README.md $(wildcard docs/*.md)
$(STUDIO): $(WEB_STAMP) $(WEB_SOURCES)
	cd web && npm run build
	touch $(STUDIO)

studio: $(STUDIO)

# The studio's typed client, regenerated from the server's own OpenAPI document.
openapi: $(STAMP) $(WEB_STAMP)
	$(BIN)/python -m swarmstation.api.openapi_file web/openapi.json
	cd web && npm run openapi

# tsc, the front-end unit tests, and the generated client matching the committed OpenAPI file
# (tests/api/test_openapi_file.py checks that file against the app).
web-check: $(WEB_STAMP)
	cd web && npx tsc --noEmit
	cd web && npx vitest run
	cd web && npx openapi-typescript openapi.json -o node_modules/.schema-check.d.ts >/dev/null 2>&1
	cmp web/src/api/schema.d.ts web/node_modules/.schema-check.d.ts || \
	  (echo "web/src/api/schema.d.ts is stale: run make openapi" && exit 1)

# Debian's Chromium for the browser tests (tests/web); Playwright never downloads a browser.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
chromium:
	@command -v chromium >/dev/null || ($(SUDO) apt-get update && $(SUDO) apt-get install -y chromium)

run: $(STAMP) $(STUDIO)
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

# PYTEST_ARGS="-n 3 --dist loadfile" runs the suite in parallel processes (pytest-xdist), a test file
# to each: about twice as fast, but on a two-core machine the starved processes miss deadlines in
# the end-to-end and CLI tests now and then, so the default is one process.
PYTEST_ARGS ?=
test: lint typecheck web-check $(CHAIN_STAMP) $(STUDIO) chromium
	$(BIN)/pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/swarmstation bench --workers 16 --jobs 2000

clean:
	rm -rf $(VENV) .swarmstation .pytest_cache .mypy_cache .ruff_cache tests/chain/node_modules \
	  web/node_modules swarmstation/studio_dist
