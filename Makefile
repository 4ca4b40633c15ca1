# `make test` and `make study` build .venv on first use (Python 3.11).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
# Tests run in 2 processes (one per core), each with 8 fake CPU devices; a whole
# test file goes to one process, so a module's shared fixture is built once.
PYTEST_ARGS ?= -n 2 --dist loadfile

.PHONY: venv test test-fast study clean

$(VENV)/.installed: setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,hf]'
	touch $@

venv: $(VENV)/.installed

# pytest exits 5 when a selection is empty: that is not a failure here.
test: $(VENV)/.installed
	$(PY) -m pytest $(PYTEST_ARGS) tests; rc=$$?; [ $$rc -eq 5 ] && exit 0 || exit $$rc

test-fast: $(VENV)/.installed
	$(PY) -m pytest $(PYTEST_ARGS) -m "not slow" tests; rc=$$?; [ $$rc -eq 5 ] && exit 0 || exit $$rc

study: $(VENV)/.installed
	$(PY) -m alignment.study --config=configs/study.py:default --workdir=runs/study

clean:
	rm -rf runs build *.egg-info .pytest_cache
