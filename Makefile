# Two commands matter: `make dev` runs the product, `make test` runs every test.
# `make check` is the inner loop: lint, format, types, and the unit and workflow tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# `make test` runs on this many processes: most tests wait on servers and browsers, not the CPU.
TEST_PROCESSES ?= 4

.PHONY: install dev test screenshots bench lint check clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit("Python 3.11+ is required" if sys.version_info < (3, 11) else 0)'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# `make dev PORT=8100 TEMPORAL_PORT=7300 UI_PORT=8300 ENTRA_PORT=9500` moves the stack's ports.
DEV_FLAGS = $(if $(PORT),--port $(PORT)) $(if $(TEMPORAL_PORT),--temporal-port $(TEMPORAL_PORT)) \
	$(if $(UI_PORT),--ui-port $(UI_PORT)) $(if $(ENTRA_PORT),--entra-port $(ENTRA_PORT)) \
	$(if $(WORKER_METRICS_PORT),--worker-metrics-port $(WORKER_METRICS_PORT))

dev: install
	$(BIN)/sso dev $(DEV_FLAGS)

# The relying party of tests/oidc/test_openid_client.py (panva's openid-client), as locked.
RP := tests/oidc/rp
RP_INSTALLED := $(RP)/node_modules/.package-lock.json

$(RP_INSTALLED): $(RP)/package-lock.json
	npm ci --prefix $(RP) --no-audit --no-fund --ignore-scripts --loglevel=error

test: install $(RP_INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .
	$(BIN)/python -m pytest -p no:cacheprovider -n $(TEST_PROCESSES) --no-loadscope-reorder $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .

# Unit and workflow tests on SQLite only: not the real stack (e2e, browser, faults) nor the
# in-process page and admin API suites (pages), which `make test` runs.
check: lint
	SSO_TEST_DATABASE_URL= $(BIN)/python -m pytest -p no:cacheprovider -q \
		-m "not e2e and not browser and not faults and not pages" $(PYTEST_ARGS)

# The benchmark (not part of `make test`): runs the real stack, prints a table, writes JSON.
bench: install
	$(BIN)/python -m bench $(BENCH_ARGS)

# The browser suite again, saving every screen to docs/screenshots/ (docs/flows.md lists them).
screenshots: install
	@test -x /usr/bin/chromium || { echo "install Debian's chromium: apt-get install chromium"; exit 1; }
	SSO_SCREENSHOTS=1 $(BIN)/python -m pytest -p no:cacheprovider -m browser $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .data .mypy_cache .ruff_cache
