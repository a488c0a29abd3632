# Two commands do all the set-up: `make train` and `make test`.
# Each creates .venv on first use and refreshes it whenever pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: train test lint format tensorboard clean-venv

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

## train: the default run (784-15-10, hand-written backprop); extra Hydra overrides via ARGS="..."
train: $(STAMP)
	$(PY) train.py $(ARGS)

## test: ruff (lint and format check), then the whole test suite (no GPU, no network needed)
test: lint
	$(PY) -m pytest -n 2 $(ARGS)

## lint: ruff's lint rules and format check (configured in pyproject.toml)
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

## format: apply ruff's formatter and safe fixes
format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

## tensorboard: inspect every run and sweep under outputs/
tensorboard: $(STAMP)
	$(VENV)/bin/tensorboard --logdir outputs

clean-venv:
	rm -rf $(VENV)
