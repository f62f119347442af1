# One-command set-up for a fresh clone. `make test` and `make demo` create .venv on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3.10 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: venv test demo lint clean

$(VENV)/.installed: requirements.txt requirements-dev.txt constraints.txt constraints-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade "pip<25"
	$(PIP) install -q -c constraints-dev.txt torch==2.13.0+cpu -r requirements.txt -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed

test: venv
	$(PY) -m ruff check lora_trainer tests benchmarks tools scripts install.py preload.py
	$(PY) -m pytest

demo: venv
	$(PY) -m lora_trainer demo --dir demo

lint: venv
	$(PY) -m ruff check .

clean:
	rm -rf $(VENV) demo .pytest_cache
