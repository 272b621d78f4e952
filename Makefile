# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint format openapi bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

## run: the API on 127.0.0.1:8000 with its own Redis and worker
run: $(STAMP)
	$(BIN)/featureviz serve --host 127.0.0.1 --port 8000

## test: lint, then the whole suite (starts its own Redis, API and workers)
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## openapi: regenerate openapi/openapi.json from the app
openapi: $(STAMP)
	$(BIN)/python scripts/write_openapi.py

bench: $(STAMP)
	$(BIN)/python bench/activations.py

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
