# Two commands a new user needs: `make serve` and `make test`. Each sets up .venv itself.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: serve test lint format audit

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

serve: $(STAMP)  ## start the service on 127.0.0.1:8000 (SQLite, offline mode)
	$(BIN)/supportgraph serve

test: lint  ## lint, layers and types, then the whole test suite (needs PostgreSQL; see TEST_DATABASE_URL)
	$(BIN)/python -m pytest

lint: $(STAMP)  ## ruff, the import-linter contracts (pyproject.toml), mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

audit: $(STAMP)  ## known advisories in the installed dependencies (needs PyPI's JSON API or OSV)
	$(BIN)/pip-audit --progress-spinner off --skip-editable
