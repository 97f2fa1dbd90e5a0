# Every entry point installs the project into .venv on first use (and again whenever
# pyproject.toml changes: the stamp file name carries its hash), then runs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell $(PYTHON) -c "import hashlib;print(hashlib.sha256(open('pyproject.toml','rb').read()).hexdigest()[:12])")
NAME ?= init
PROFILE ?=
PROFILE_ARG := $(if $(PROFILE),--profile $(PROFILE),)

.PHONY: install constraints test test-fast lint study ui dashboard report list speed gpu-check gpu-slot clean-venv

# CONSTRAINTS=constraints.txt installs the exact versions CI last ran with (docs/install.md); `make constraints`
# rewrites that file from what .venv holds.
CONSTRAINTS ?=

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing ablation-bench into $(VENV) (first run only; torch is large)"
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]' $(if $(CONSTRAINTS),-c $(CONSTRAINTS),)
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

install: $(STAMP)

constraints: $(STAMP)
	$(PY) -m pip freeze --exclude-editable > constraints.txt
	@echo "constraints.txt: $$(wc -l < constraints.txt) pinned versions (make install CONSTRAINTS=constraints.txt installs them)"

# Everything CI runs: lint and format checks, then every test (PYTEST_ARGS passes extra pytest options).
test: lint
	$(PY) -m pytest -q tests $(PYTEST_ARGS)

# The edit loop: no whole studies in subprocesses, no browser, PostgreSQL or MLflow server, no read of the whole data set (marker `slow`).
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

# The Optuna studies in optuna-dashboard (the dashboard extra): each trial's validation accuracy per epoch, the
# objective best_val_acc. STORAGE=URL for another storage (default $BENCH_STORAGE, else the project's journal);
# PORT (default 8080).
OPTUNA_STORAGE := $(or $(STORAGE),$(BENCH_STORAGE),optuna/studies.journal)
dashboard: $(STAMP)
	@case "$(OPTUNA_STORAGE)" in *://*) ;; *) test -f "$(OPTUNA_STORAGE)" || { echo "no Optuna studies here yet ($(OPTUNA_STORAGE)): run make study NAME=... or bench import first"; exit 2; } ;; esac
	$(VENV)/bin/optuna-dashboard "$(OPTUNA_STORAGE)" --host 127.0.0.1 --port $(or $(PORT),8080)

report: $(STAMP)
	$(VENV)/bin/bench report

speed: $(STAMP)
	$(VENV)/bin/bench speed $(if $(MODEL),--model $(MODEL),--quick)

gpu-check: $(STAMP)
	$(VENV)/bin/bench gpu-check

# One short GPU slot turned into progress (scripts/gpu-slot --help): LIMIT seconds (default 600), PROFILE (default
# full), STUDIES=a,b (default: the priority order). No install step: a lent GPU machine sets up from .gpu-bundle/.
gpu-slot:
	scripts/gpu-slot $(if $(LIMIT),--limit $(LIMIT),) $(PROFILE_ARG) $(if $(STUDIES),--studies $(STUDIES),)

clean-venv:
	rm -rf $(VENV)

# Reference results (results/reference/): every study at REF_PROFILE (default quick) into fresh stores in REF_WORK
# (the Optuna journal and mlflow.db there), then one bundle (bench export) and the README's summary table with one
# figure (bench report --summary-md). WORKERS=N is passed to bench study as --workers; REF_RESUME=1 continues an
# interrupted run in the same stores instead of starting fresh. Redirected to a file, each study prints one line per
# finished trial. About an hour on a 2-core CPU with WORKERS=2 (58 min measured); run it in the background:
#   nohup make reference WORKERS=2 > reference.log 2>&1 &   (tail -f reference.log to follow)
# BUDGET=SECONDS stops the whole run cleanly within that time (each study gets bench study --time-budget with what is
# left); the bundle and report then hold what finished, and make reference REF_RESUME=1 BUDGET=... goes on.
# REF_FROM=BUNDLE imports a bundle's runs into the stores first (bench import: refused if its definitions differ),
# so only what it lacks trains, e.g. the seeds a study file gained: make reference REF_FROM=$(REF_DIR)/quick.json.gz
REF_PROFILE ?= quick
REF_WORK ?= build/reference
REF_DIR ?= results/reference
REF_STUDIES ?= $(sort $(basename $(notdir $(wildcard studies/*.toml))))
WORKERS ?= auto
REF_DATA := $(abspath $(or $(DATA_DIR),$(BENCH_DATA_DIR),data))
.PHONY: reference
reference: $(STAMP)
	$(if $(REF_RESUME),,rm -rf $(REF_WORK) &&) mkdir -p $(REF_WORK) $(REF_DIR)
	$(if $(REF_FROM),cd $(REF_WORK) && $(abspath $(VENV))/bin/bench import $(abspath $(REF_FROM)),)
	set -e; end=$$(( $$(date +%s) + $(or $(BUDGET),0) )); for study in $(REF_STUDIES); do \
	  budget=; if [ -n "$(BUDGET)" ]; then left=$$(( end - $$(date +%s) )); \
	    if [ $$left -lt 10 ]; then echo "time budget reached before $$study: continue with make reference REF_RESUME=1 BUDGET=SECONDS"; break; fi; \
	    budget="--time-budget $$left"; fi; \
	  (cd $(REF_WORK) && $(abspath $(VENV))/bin/bench study $$study --profile $(REF_PROFILE) --workers $(WORKERS) \
	    --data-dir $(REF_DATA) $$budget); \
	done
	$(VENV)/bin/bench export --profile $(REF_PROFILE) --label reference --tracking-uri sqlite:///$(abspath $(REF_WORK))/mlflow.db \
	  --out $(REF_DIR)/$(REF_PROFILE).json.gz
	$(VENV)/bin/bench report --results $(REF_DIR) --out $(REF_WORK)/report --summary-md $(REF_DIR)/summary.md
