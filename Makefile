# The two commands a new user runs (see README): `make demo` and `make test`. Both set everything up first.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install demo test test-fast lint bench lock

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.lock scripts/install.sh
	bash scripts/install.sh $(VENV)
	touch $@

demo: install
	VENV=$(VENV) bash scripts/demo.sh

# Two pytest workers (one torch thread each); a test file, or the files that share a costly session fixture
# or the local Slurm cluster, is one unit of work (tests/helpers/scheduling.py), handed out in collection
# order: the longest first. TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2

test: install
	$(PY) -m pytest -n $(TEST_WORKERS) --no-loadscope-reorder

test-fast: install
	$(PY) -m pytest -m "not slow"

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

# requirements.lock from pyproject.toml (exact versions and hashes; uv pip compile --universal, Python 3.11):
# run it after changing a dependency, and commit the lock. scripts/install.sh refuses a stale lock.
lock:
	$(PY) -m pip install --disable-pip-version-check --quiet "uv>=0.9"
	$(PY) scripts/lock.py
