# Two commands set everything up on a machine with nothing but Python 3.11:
#   make demo   install, build release/ and solutions/, grade the bundled demo class
#   make test   run the whole test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install demo test test-fast build check-build bench lab clean

install: $(VENV)/.installed

# torch first, from its CPU wheel: a plain `torch` requirement would pull a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
	$(BIN)/pip install -q torch==2.13.0 2>&1 | grep -v "is ignored" || true
	$(BIN)/pip install -q -c constraints.txt -e ".[dev]" 2>&1 | grep -v "is ignored" || true
	$(BIN)/python -c "import torch, transformers, nbgrader, llmcourse, grader" || (echo "The install did not complete: see the messages above." && exit 1)
	touch $@

build: install
	$(BIN)/grader build

check-build: install
	$(BIN)/grader build --check

demo: install
	$(BIN)/grader build
	$(BIN)/grader demo

test: install
	$(BIN)/python -m pytest -n 2 --dist loadfile tests

test-fast: install
	$(BIN)/python -m pytest -n 2 --dist loadfile -m "not slow" tests

lab: install
	$(BIN)/jupyter lab --notebook-dir=release --ServerApp.ip=127.0.0.1 $$( [ "$$(id -u)" = 0 ] && echo --allow-root )

bench: install
	$(BIN)/python benchmarks/grading_overhead.py
	$(BIN)/python benchmarks/notebook_budget.py

clean:
	rm -rf $(VENV) autograded/* feedback submitted gradebook.db .grader
