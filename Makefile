# Quick start: `make demo`, then `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Look for the paper's images in a local folder first (ours sit in ../shared/images);
# elsewhere presets download the originals.
export NST_IMAGES ?= $(wildcard $(abspath ../shared/images))

.PHONY: setup demo test lint

setup: $(VENV)/.installed
	$(BIN)/python -m nst_tf.weights

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

demo: setup
	$(BIN)/python scripts/run.py size=384 iterations=200 save_every=50

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check .
