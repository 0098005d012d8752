# The README's two commands: `make serve` and `make test`. Each sets up what it needs:
# `make serve` the server alone (.[server]), `make test` and the rest the development tools.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SERVE_STAMP := $(VENV)/.installed-server
NODE_STAMP := examples/node/node_modules/.installed

.PHONY: serve test test-unit test-integration test-acceptance gen lint bench clean install \
	screenshots chromium

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(SERVE_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[server]'
	touch $(SERVE_STAMP)

install: $(STAMP)

serve: $(if $(wildcard $(STAMP)),$(STAMP),$(SERVE_STAMP))
	$(BIN)/jobwheel-server --metrics-listen 127.0.0.1:9464 --http-listen 127.0.0.1:8080 $(ARGS)

# The Node.js worker example's packages, for tests/integration/workers/test_node.py; without
# npm the test skips (and fails under CI=true).
$(NODE_STAMP): examples/node/package.json
	npm install --prefix examples/node --no-audit --no-fund
	touch $(NODE_STAMP)

# The dashboard's browser tests drive Debian's Chromium, installed here where apt can (as
# root, or with passwordless sudo); elsewhere those tests skip (and fail under CI=true).
CHROMIUM := /usr/bin/chromium
chromium:
	@if [ ! -x $(CHROMIUM) ]; then \
		if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
			apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
		elif command -v apt-get >/dev/null && sudo -n true 2>/dev/null; then \
			sudo -n apt-get update -qq && sudo -n apt-get install -y -qq chromium >/dev/null; \
		else echo "no $(CHROMIUM) and no apt to install it: the browser tests will skip"; fi; \
	fi

# Tests by cost: tests/unit (no I/O: seconds), tests/integration (real servers, SQLite and
# PostgreSQL, HTTP, protoc and buf, the dashboard in a browser), tests/acceptance (server
# processes, the README, the CLI). PostgreSQL tests run when JOBWHEEL_TEST_POSTGRES_URL is set,
# or when a PostgreSQL answers on 127.0.0.1:5432 (then postgresql://postgres@127.0.0.1:5432/test;
# see tests/conftest.py).
# `make test` runs them in TEST_WORKERS processes (pytest-xdist; each worker has a PostgreSQL
# database of its own, each test a schema): they mostly wait, so two workers take about 0.6 of
# the serial time on a 2-core machine. TEST_WORKERS=0 runs them in one process (as --pdb needs).
TEST_WORKERS ?= 2
test: $(STAMP) $(if $(shell command -v npm),$(NODE_STAMP)) chromium
	$(BIN)/python -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

test-unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit -q $(PYTEST_ARGS)

test-integration: $(STAMP) $(if $(shell command -v npm),$(NODE_STAMP)) chromium
	$(BIN)/python -m pytest tests/integration $(PYTEST_ARGS)

test-acceptance: $(STAMP)
	$(BIN)/python -m pytest tests/acceptance $(PYTEST_ARGS)

# Screenshots of every dashboard page into docs/ (a server with sample jobs, on free ports).
screenshots: $(STAMP) chromium
	$(BIN)/python -m tests.integration.web.screenshots docs

gen: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -I proto --python_out=client --pyi_out=client \
		--grpc_python_out=client --plugin=protoc-gen-mypy_grpc=$(BIN)/protoc-gen-mypy_grpc \
		--mypy_grpc_out=client proto/jobwheel/v1/*.proto
	$(BIN)/python -m grpc_tools.protoc -I proto --include_source_info \
		--descriptor_set_out=client/jobwheel/v1/descriptors.binpb proto/jobwheel/v1/*.proto
	$(BIN)/python tools/gen_sync_client.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check server client/jobwheel/client tests bench tools examples
	$(BIN)/mypy
	$(BIN)/buf lint

bench: $(STAMP)
	$(BIN)/python -m bench $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
