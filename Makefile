# The two commands a new user runs (see README): `make demo` and `make test`. Both set everything up first.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install demo test test-fast lint bench

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/install.sh
	bash scripts/install.sh $(VENV)
	touch $@

demo: install
	VENV=$(VENV) bash scripts/demo.sh

# Two pytest workers (the suite's tests run one torch thread each); tests that share a session fixture or a
# local cluster carry an xdist_group mark and run on one worker. TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 2

test: install
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup

test-fast: install
	$(PY) -m pytest -m "not slow"

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .
