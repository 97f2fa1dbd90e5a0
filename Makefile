# Every entry point installs the project into .venv on first use (and again whenever
# pyproject.toml changes: the stamp file name carries its hash), then runs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell $(PYTHON) -c "import hashlib;print(hashlib.sha256(open('pyproject.toml','rb').read()).hexdigest()[:12])")
NAME ?= init
PROFILE ?=
PROFILE_ARG := $(if $(PROFILE),--profile $(PROFILE),)

.PHONY: install test test-fast lint study ui report list speed gpu-check clean-venv

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing ablation-bench into $(VENV) (first run only; torch is large)"
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

install: $(STAMP)

# Everything CI runs: lint and format checks, then every test (PYTEST_ARGS passes extra pytest options).
test: lint
	$(PY) -m pytest -q tests $(PYTEST_ARGS)

# The edit loop: no whole studies in subprocesses, no browser, PostgreSQL or MLflow server (marker `slow`).
test-fast: $(STAMP)
	$(PY) -m pytest -q tests -m "not slow" $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check bench report tests scripts
	$(VENV)/bin/ruff format --check bench report tests scripts

study: $(STAMP)
	$(VENV)/bin/bench study $(NAME) $(PROFILE_ARG)

list: $(STAMP)
	$(VENV)/bin/bench list

ui: $(STAMP)
	$(VENV)/bin/bench ui

report: $(STAMP)
	$(VENV)/bin/bench report

speed: $(STAMP)
	$(VENV)/bin/bench speed $(if $(MODEL),--model $(MODEL),--quick)

gpu-check: $(STAMP)
	$(VENV)/bin/bench gpu-check

clean-venv:
	rm -rf $(VENV)
