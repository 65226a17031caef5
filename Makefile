# Everything installs itself: a fresh machine needs only python3 (>= 3.11) and make.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: setup demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

## The digits example: prepare the data, train through two simulated spot reclaims.
demo: setup
	$(BIN)/python examples/digits/prepare_data.py
	$(BIN)/cloudtrain run examples/digits/cloudtrain.yaml

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy

test: lint
	PREFECT_SERVER_ANALYTICS_ENABLED=false $(BIN)/python -m pytest

bench: setup
	$(BIN)/python bench/overhead.py

clean:
	rm -rf $(VENV) examples/digits/.cloudtrain examples/digits/data .pytest_cache .mypy_cache .ruff_cache
