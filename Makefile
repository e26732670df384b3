# Quick start: `make demo`, then `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Look for the paper's images in a local folder first (ours sit in ../shared/images);
# elsewhere presets download the originals.
export NST_IMAGES ?= $(wildcard $(abspath ../shared/images))

.PHONY: setup demo test lint

# The offline weights, and scikit-image's sample pictures that model.normalize calibrates on
# (tests/test_normalize.py runs on them instead of fetching them).
setup: $(VENV)/.installed
	$(BIN)/python -m nst_tf.weights
	$(BIN)/python -c "from nst_tf.cache import default_cache_dir; from nst_tf.normalize import fetch_skimage; fetch_skimage(default_cache_dir())"

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

demo: setup
	$(BIN)/python scripts/run.py size=384 iterations=200 save_every=50

# The suite on TEST_WORKERS processes (pytest-xdist), each test file kept in one worker so that its
# tests still share their compiled steps (nst_tf/session.py). `pytest tests/test_x.py -k name`
# alone runs in one process, as before.
TEST_WORKERS ?= 2

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

lint: setup
	$(BIN)/ruff check .
