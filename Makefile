# The two commands of the README: `make up` and `make test`. Both install what is missing first.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# Reinstall whenever pyproject.toml changes.
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
CHECKED := shared services kaiten localdev presets tests bench

.PHONY: install up down status test lint typecheck pytest test-vllm

# torch is installed first and exactly: any looser resolution pulls the CUDA build (GBs).
$(STAMP): pyproject.toml
	scripts/bootstrap-venv $(PYTHON) $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,runtime]'
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

up: $(STAMP)
	$(BIN)/kaiten up

down: $(STAMP)
	$(BIN)/kaiten down

status: $(STAMP)
	$(BIN)/kaiten status

lint: $(STAMP)
	$(BIN)/ruff check $(CHECKED)
	$(BIN)/ruff format --check $(CHECKED)

typecheck: $(STAMP)
	$(BIN)/mypy $(CHECKED)

# pytest exits 5 when it collects nothing; make treats any non-zero exit as a failure.
# OMP_NUM_THREADS=1: with the tiny test model, torch's thread pool costs more than it gains.
pytest: $(STAMP)
	scripts/ensure-debian-packages docker-registry
	scripts/ensure-compose-schema
	scripts/ensure-asyncapi-schema
	scripts/ensure-helm $(BIN)/helm
	OMP_NUM_THREADS=1 $(BIN)/pytest --ignore=tests/vllm

# Not part of `make test`: installs a CPU build of vLLM (several GB) in .venv-vllm and serves the
# tiny model with an adapter through the vLLM launcher.
test-vllm: $(STAMP)
	scripts/test-vllm

test: lint typecheck pytest
