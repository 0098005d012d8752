# The README's two commands: `make serve` and `make test`. Each sets up what it needs:
# `make serve` the server alone (.[server]), `make test` and the rest the development tools.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SERVE_STAMP := $(VENV)/.installed-server
NODE_STAMP := examples/node/node_modules/.installed

.PHONY: serve test gen lint bench clean install

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
	$(BIN)/jobwheel-server --metrics-listen 127.0.0.1:9464 $(ARGS)

# The Node.js worker example's packages, for tests/workers/test_node.py; without npm the
# test skips (and fails under CI=true).
$(NODE_STAMP): examples/node/package.json
	npm install --prefix examples/node --no-audit --no-fund
	touch $(NODE_STAMP)

test: $(STAMP) $(if $(shell command -v npm),$(NODE_STAMP))
	$(BIN)/python -m pytest $(PYTEST_ARGS)

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
