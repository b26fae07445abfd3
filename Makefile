# make demo   registers the examples, invokes them, prints REPORT lines and a latency table
# make test   ruff, mypy and the test suite
# make bench  the benchmark suite (pytest-benchmark), with ratios
# make debug  rebuilds the native core with Cython line tracing and annotations
# Each creates .venv/ and builds what is missing first; a second run is quick.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DEPS_STAMP := $(VENV)/.deps-stamp
NATIVE_STAMP := $(VENV)/.native-stamp
NATIVE_SOURCES := $(wildcard native/*.pyx native/*.pxi native/*.pxd native/*.h) native/init.c setup.py

.PHONY: all demo test lint bench debug clean

all: $(NATIVE_STAMP)

$(PY):
	PYTHON=$(PYTHON) scripts/system-deps.sh
	$(PYTHON) -m venv $(VENV)

$(DEPS_STAMP): pyproject.toml scripts/system-deps.sh | $(PY)
	PYTHON=$(PYTHON) scripts/system-deps.sh
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "setuptools>=68" wheel "cython>=3.0"
	# compat mode: a plain .pth path entry, not an import-hook finder that every
	# interpreter (zygotes, cold starts) would pay ~10 ms to import.
	$(PY) -m pip install -q -e '.[test]' --no-build-isolation --config-settings editable_mode=compat
	touch $@

$(NATIVE_STAMP): $(DEPS_STAMP) $(NATIVE_SOURCES)
	$(PY) setup.py -q build_ext --inplace
	touch $@

demo: $(NATIVE_STAMP)
	$(PY) examples/demo.py

lint: $(NATIVE_STAMP)
	$(PY) -m ruff check sandbox tests benchmarks examples
	$(PY) -m mypy sandbox

test: lint
	$(PY) -m pytest -q tests

bench: $(NATIVE_STAMP)
	$(PY) -m pytest benchmarks --benchmark-only --benchmark-columns=min,median,mean,max,rounds -p no:cacheprovider

debug: $(DEPS_STAMP)
	SANDBOX_DEBUG=1 $(PY) setup.py -q build_ext --inplace --force
	rm -f $(NATIVE_STAMP)
	@echo "debug build: line tracing on; annotations in native/*.html"

clean:
	rm -rf build native/*.c native/*.html sandbox/*.so sandbox/sandbox-init $(NATIVE_STAMP)
