# Every entry point installs the project into .venv on first use (and again whenever
# pyproject.toml changes: the stamp file name carries its hash), then runs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell $(PYTHON) -c "import hashlib;print(hashlib.sha256(open('pyproject.toml','rb').read()).hexdigest()[:12])")
NAME ?= init
PROFILE ?=
PROFILE_ARG := $(if $(PROFILE),--profile $(PROFILE),)

.PHONY: install test study ui report list speed gpu-check clean-venv

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing ablation-bench into $(VENV) (first run only; torch is large)"
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

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
