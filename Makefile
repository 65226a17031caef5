# Everything installs itself: a fresh machine needs only python3 (>= 3.11) and make, plus
# node (>= 20) and npm for `make test` (the Azure Storage emulator, Azurite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# Inside node_modules/, so deleting that folder reinstalls it.
NODE_STAMP := node_modules/.installed-stamp

.PHONY: setup node-tools demo demo-failover demo-budget demo-distributed demo-sweep test lint bench bench-queued clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

# Azurite, pinned in package-lock.json, into ./node_modules (nothing global).
$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $(NODE_STAMP)

node-tools: $(NODE_STAMP)

## The digits example: prepare the data, train through two simulated spot reclaims.
demo: setup
	$(BIN)/python examples/digits/prepare_data.py
	$(BIN)/cloudtrain run examples/digits/cloudtrain.yaml --force

## A failover between two local "clouds": an outage, the checkpoint copied along, resumed.
demo-failover: setup
	$(BIN)/python examples/digits/prepare_data.py
	$(BIN)/cloudtrain run examples/failover/cloudtrain.yaml --force

## A deadline that moves the run to on-demand, then a budget that stops it (exit 1).
demo-budget: setup
	$(BIN)/cloudtrain plan examples/budget/cloudtrain.yaml
	$(BIN)/cloudtrain run examples/budget/cloudtrain.yaml --force
	-$(BIN)/cloudtrain run examples/budget/cloudtrain.yaml --force --set budget.max_cost=0.01

## A 2 hosts x 2 ranks torchrun-style job on this machine: reclaimed, resumed as a group.
demo-distributed: setup
	$(BIN)/cloudtrain run examples/distributed/cloudtrain.yaml --force

## A sweep: 6 trials of the digits script, 3 at a time, each reclaimed once and resumed;
## the trials ranked by val_accuracy and the best model named.
demo-sweep: setup
	$(BIN)/python examples/digits/prepare_data.py
	$(BIN)/cloudtrain plan examples/sweep/cloudtrain.yaml > /dev/null
	$(BIN)/cloudtrain run examples/sweep/cloudtrain.yaml --force

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy

test: lint $(NODE_STAMP)
	PREFECT_SERVER_ANALYTICS_ENABLED=false $(BIN)/python -m pytest

bench: setup $(NODE_STAMP)
	$(BIN)/python bench/overhead.py
	$(BIN)/python bench/loud_script.py
	$(BIN)/python bench/plan_speed.py
	$(BIN)/python bench/s3_upload.py
	$(BIN)/python bench/blob_upload.py

## The process pool's load figure: 20 smoke runs queued at once on one worker, limit 4
## (a real Prefect server on loopback; about 5 minutes on 2 cores).
bench-queued: setup
	PREFECT_SERVER_ANALYTICS_ENABLED=false $(BIN)/python bench/queued_runs.py --runs 20 --limit 4

clean:
	rm -rf $(VENV) node_modules examples/digits/.cloudtrain examples/digits/data examples/sweep/.cloudtrain .pytest_cache .mypy_cache .ruff_cache
