# The README's commands. Every target sets up .venv idempotently first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.i2f_fast-installed
OUT    ?= i2f-results

.PHONY: setup demo test bench clean

setup: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) requirements-dev.txt setup.py pyproject.toml
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-build-isolation --no-deps -e .
	touch $(STAMP)

demo: setup
	$(VENV)/bin/i2f-fast demo --out $(OUT)

test: setup
	$(PY) -m pytest python_tests -q

bench: setup
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) build *.egg-info $(OUT)
