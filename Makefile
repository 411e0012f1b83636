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
	$(BIN)/pip install -q -c constraints.txt -e ".[dev,distributed]" 2>&1 | grep -v "is ignored" || true
	$(BIN)/python -c "import torch, transformers, nbgrader, llmcourse, grader" || (echo "The install did not complete: see the messages above." && exit 1)
	touch $@

build: install
	$(BIN)/grader build

check-build: install
	$(BIN)/grader build --check

demo: install
	$(BIN)/grader build
	$(BIN)/grader demo

# --dist loadscope: a test file's functions stay on one worker (they share module fixtures, e.g. a notebook run
# once), and each class of tests/test_checks.py (one assignment's checks) goes to a worker of its own.
test: install
	$(BIN)/python -m pytest -n 2 --dist loadscope --no-loadscope-reorder --durations=30 tests

test-fast: install
	$(BIN)/python -m pytest -n 2 --dist loadscope -m "not slow" tests

lab: install
	$(BIN)/jupyter lab --notebook-dir=release --ServerApp.ip=127.0.0.1 $$( [ "$$(id -u)" = 0 ] && echo --allow-root )

bench: install
	$(BIN)/python benchmarks/grading_overhead.py
	$(BIN)/python benchmarks/notebook_budget.py

clean:
	rm -rf $(VENV) autograded/* feedback submitted gradebook.db .grader

# Rebuild the course's models, tokenizer and data sets from seeds (under an hour on 2 CPU cores),
# measure them, and rewrite assets/MODELS.md. CI does not run this; tests/test_assets.py smoke-tests the scripts.
.PHONY: assets
assets: install
	$(BIN)/python assets/scripts/build_all.py

# The JupyterHub deployment (hub/, docs/hub.md) and what its tests need: JupyterHub and Playwright in
# .venv, configurable-http-proxy in hub/node_modules, and build/hub/student-env, a student environment
# made by the image's own install script from the student wheel, with a Python every Unix user can run.
# Debian's Chromium comes from apt (.ci/run installs it). `make test` builds these first.
HUB_ENV    := build/hub/student-env
HUB_PYTHON ?= $(shell [ -x /usr/bin/python3.11 ] && echo /usr/bin/python3.11 || echo $(PYTHON))
.PHONY: hub-env hub-image screenshots
hub-env: $(VENV)/.hub-installed hub/node_modules/.package-lock.json $(HUB_ENV)/.installed

$(VENV)/.hub-installed: $(VENV)/.installed pyproject.toml constraints.txt
	$(BIN)/pip install -q -c constraints.txt -e ".[hub]" 2>&1 | grep -v "is ignored" || true
	$(BIN)/python -c "import jupyterhub, jupyterhub_idle_culler, playwright" || (echo "The hub install did not complete." && exit 1)
	touch $@

hub/node_modules/.package-lock.json: hub/package.json hub/package-lock.json
	cd hub && npm ci --no-audit --no-fund

$(HUB_ENV)/.installed: $(VENV)/.hub-installed hub/install-student-env.sh hub/student/nbgrader_config.py setup.py \
		pyproject.toml constraints.txt $(shell find llmcourse -name '*.py')
	rm -rf build/hub/src build/hub/wheel
	mkdir -p build/hub/src
	cp -R setup.py pyproject.toml README.md llmcourse build/hub/src/
	LLMCOURSE_WHEEL=student $(BIN)/pip wheel -q --no-deps -w build/hub/wheel build/hub/src
	[ -x $(HUB_ENV)/bin/python ] || $(HUB_PYTHON) -m venv $(HUB_ENV)
	hub/install-student-env.sh $(HUB_ENV)/bin/python build/hub/wheel/llmcourse-*.whl assets constraints.txt
	touch $@

test: hub-env

# The students' image for the hub (needs a Docker engine; not used by the tests).
hub-image:
	docker build -f hub/Dockerfile -t llmcourse-student .

# Rewrite docs/screenshots/ from the browser test and the hub test.
screenshots: hub-env
	LLMCOURSE_SCREENSHOTS=docs/screenshots $(BIN)/python -m pytest -p no:cacheprovider \
		tests/test_lab_browser.py tests/test_hub_roundtrip.py
