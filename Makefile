# kdumplab: `make demo` (the main job) and `make test` (everything the tests need, then the tests).
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
CACHE  ?= $(HOME)/.cache/kdumplab
DUMP   ?=
PYTEST_ARGS ?=

.PHONY: all deps venv demo test test-matrix fuzz test-unit test-synthetic test-vm bench clean

all: test

deps:
	bash scripts/install-system-deps.sh

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[all]'
	touch $@

venv: deps $(VENV)/.installed

demo: venv
	$(VENV)/bin/kdumplab demo $(if $(DUMP),--dump $(DUMP),) --out out/demo

test: venv
	$(PY) -m pytest -q -ra $(PYTEST_ARGS)

# Every kernel, architecture, crash kind and capture way (hours under TCG; `make test` runs a representative set).
test-matrix: venv
	KDUMPLAB_MATRIX=1 $(PY) -m pytest -q -ra -m matrix tests/vm $(PYTEST_ARGS)

# The long fuzz run (thousands of mutated dumps); `make test` runs a seeded few hundred.
fuzz: venv
	KDUMPLAB_FUZZ_LONG=1 $(PY) -m pytest -q -ra -m fuzz_long tests $(PYTEST_ARGS)

test-unit: venv
	$(PY) -m pytest -q -ra tests/unit

test-synthetic: venv
	$(PY) -m pytest -q -ra tests/synthetic

test-vm: venv
	$(PY) -m pytest -q -ra tests/vm

bench: venv
	for b in benchmarks/*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) out build *.egg-info
