# Self-documenting: `make help` lists the targets.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA ?= data

.PHONY: help install data train test bench clean

help:  ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,sweep]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install the package with its test extras

data: $(STAMP)  ## fetch and verify MNIST and Fashion-MNIST into ./data (offline sources first)
	$(BIN)/python -m diffusion.fetch --root $(DATA)

train: data  ## train the default model on MNIST (~15 min on 2 CPU cores) and write a sample grid
	$(BIN)/python train.py

test: data  ## run the whole test suite
	$(BIN)/python -m pytest -q tests

bench: data  ## training throughput: default configuration vs a plain fp32 PyTorch loop
	$(BIN)/python -m benchmarks.train_speed

clean:  ## remove run outputs (keeps .venv and data)
	rm -rf outputs multirun .pytest_cache
