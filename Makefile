# One entry point for every task; `make help` lists them.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: help demo test test-unit lint format bench install clean

help:  ## list the tasks
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install the package with its test extras

demo: $(STAMP)  ## run the whole pipeline once on the sample history
	$(BIN)/lifecycle demo

# Two test processes, each with a broker of its own (the cluster's tests share one process and
# its three nodes): on two cores the suite takes about two thirds of the time of one process.
TEST_PROCESSES ?= 2

test: $(STAMP)  ## the whole test suite, integration tests on a real local Kafka included
	$(BIN)/pytest -n $(TEST_PROCESSES)

test-unit: $(STAMP)  ## the unit tests only: no broker, well under a minute
	$(BIN)/pytest tests/unit

lint: $(STAMP)  ## ruff (lint, and formatting checked) and mypy (strict), as CI runs them
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)  ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(STAMP)  ## lifecycle bench with its default sizes (a few minutes)
	$(BIN)/lifecycle bench

clean:  ## remove the virtualenv and caches (not the broker's data or the jar cache)
	rm -rf $(VENV) .pytest_cache .hypothesis .mypy_cache .ruff_cache *.egg-info
