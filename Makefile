PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install run test lint lock

install:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e ".[dev]"

run: install
	$(BIN)/python -m experiments.baseline

test: install
	$(BIN)/python -m pytest -n 2

lint: install
	$(BIN)/ruff check .

# Re-resolve the dependency tree from pyproject.toml's ranges and pin it (deliberate updates only).
lock:
	rm -rf .lock-venv && $(PY) -m venv .lock-venv
	.lock-venv/bin/pip install -q -e ".[dev,notebook]"
	.lock-venv/bin/pip freeze --exclude-editable | grep -v '^mlp-jax' > constraints.txt
	rm -rf .lock-venv
