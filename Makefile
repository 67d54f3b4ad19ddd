# Every target creates .venv and installs the project first, so a fresh clone needs nothing
# but Python 3.11+.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install test test-unit lint up bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required, found " + sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

# Two test processes, a test file at a time on each: most tests wait on servers, timers and
# subprocesses, so a second process uses the time the first one waits. The fault campaign
# runs after them, alone: it keeps every core busy by itself (tests/faults/shard.py).
TEST_PROCESSES ?= 2

test: install
	$(BIN)/pytest -n $(TEST_PROCESSES) --dist loadfile --ignore=tests/faults
	$(BIN)/pytest tests/faults

test-unit: install
	$(BIN)/pytest tests/unit

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy domain contracts workflows activities bootstrap worker api

up: install
	$(BIN)/trading up

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
