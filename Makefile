# Quick start: `make demo` (full cycle on a phantom) and `make test`. Both create .venv and install when needed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.nnunet_mm-installed
DEMO_DIR ?= demo_work

.PHONY: install test demo bench clean-demo

$(STAMP): setup.py pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	@touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m pytest -q -n 2

demo: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/nnunet_mm demo --workdir $(DEMO_DIR) --overwrite

bench: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) bench/bench_trainers.py --output bench_out

clean-demo:
	rm -rf $(DEMO_DIR)
