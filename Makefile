# `make test` and `make study` build .venv on first use (Python 3.11), with uv where it
# can stand in for pip (tools/install.py says when it cannot).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
# Tests run in 2 processes (one per core), each with 8 fake CPU devices; a whole
# test file goes to one process, so a module's shared fixture is built once.
PYTEST_ARGS ?= -n 2 --dist loadfile --no-loadscope-reorder

.PHONY: venv test test-fast test-e2e test-multiprocess test-hf study study-full study-scaling clean

$(VENV)/.installed: setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) tools/install.py '.[test,hf]'
	touch $@

venv: $(VENV)/.installed

# pytest exits 5 when a selection is empty: that is not a failure here.
# Markers (pytest.ini, tests/README.md): slow, e2e (whole experiments), multiprocess
# (multi-process JAX jobs), hf (needs torch and transformers).
# test: the whole suite, every marker.
test: $(VENV)/.installed
	$(PY) -m pytest $(PYTEST_ARGS) tests; rc=$$?; [ $$rc -eq 5 ] && exit 0 || exit $$rc

# test-fast: everything but those four kinds; a few minutes on 2 cores (README, "Tests").
test-fast: $(VENV)/.installed
	$(PY) -m pytest $(PYTEST_ARGS) -m "not slow and not e2e and not multiprocess and not hf" tests; rc=$$?; [ $$rc -eq 5 ] && exit 0 || exit $$rc

# test-e2e, test-multiprocess, test-hf: one kind each (a test can be of several).
test-e2e: $(VENV)/.installed
	$(PY) -m pytest $(PYTEST_ARGS) -m e2e tests; rc=$$?; [ $$rc -eq 5 ] && exit 0 || exit $$rc

test-multiprocess: $(VENV)/.installed
	$(PY) -m pytest $(PYTEST_ARGS) -m multiprocess tests; rc=$$?; [ $$rc -eq 5 ] && exit 0 || exit $$rc

test-hf: $(VENV)/.installed
	$(PY) -m pytest $(PYTEST_ARGS) -m hf tests; rc=$$?; [ $$rc -eq 5 ] && exit 0 || exit $$rc

study: $(VENV)/.installed
	$(PY) -m alignment.study --config=configs/study.py:default --workdir=runs/study

# The larger scale: every experiment over three seeds. It extends the default
# study in place (its foundation, Fig. 1 and attribution stages are reused by
# hash) and its report replaces the default's in runs/study.
study-full: $(VENV)/.installed
	$(PY) -m alignment.study --config=configs/study.py:full --workdir=runs/study

# H5's two axes on a workstation (policy and proxy sizes t5-nano to t5-mini, each SFT
# trained to the criterion): a study of its own, in runs/scaling.
study-scaling: $(VENV)/.installed
	$(PY) -m alignment.study --config=configs/study.py:scaling --workdir=runs/scaling

clean:
	rm -rf runs build *.egg-info .pytest_cache
