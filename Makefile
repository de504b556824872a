# `make run` and `make test` set everything up from nothing (a fresh clone with Python 3.11;
# PYTHON=python3.12 make ... for another version TensorFlow supports, 3.10 to 3.13).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test test-unit test-slow test-consumers test-ray lint bench bench-jax bench-formats consumer-matrix format-matrix docs clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e ".[test,docs]"
	touch $(STAMP)

run: install
	$(BIN)/python -m exportkit

# Two workers (pytest-xdist), a test file each at a time: many tests wait on a TensorFlow process
# of their own (a CLI run, its verifier), so one core sat idle in a serial run. The 15 slowest
# tests are listed at the end.
test: install
	$(BIN)/python -m pytest -n 2 --dist loadfile --durations=15

# The fast tier: no TensorFlow process of its own (well under a minute).
test-unit: install
	$(BIN)/python -m pytest -m unit -q

# ruff (lint and format) over the code and tests, mypy over exportkit/.
lint: install
	$(BIN)/ruff check exportkit tests bench examples conf docs/gen_config_reference.py
	$(BIN)/ruff format --check exportkit tests bench examples conf docs/gen_config_reference.py
	$(BIN)/mypy

test-slow: install
	$(BIN)/python -m pytest -m slow

# Every cell of the consumer matrix (models x the tools that read SavedModels); `make test` runs a subset.
test-consumers: install
	$(BIN)/python -m pytest tests/test_consumers.py tests/test_format_matrix.py -m "not slow and not ray"

# The same run, printing the matrix as a markdown table (model x consumer: ok / consumer limit / FAIL).
consumer-matrix: install
	$(BIN)/python bench/consumer_matrix.py

# The Ray launcher in its own environment (see the `ray` extra in pyproject.toml).
RAY_VENV := .venv-ray
test-ray:
	test -x $(RAY_VENV)/bin/python || $(PYTHON) -m venv $(RAY_VENV)
	$(RAY_VENV)/bin/python -m pip install -e ".[ray]" "pytest>=8"
	$(RAY_VENV)/bin/python -m pytest -m ray tests/test_sweep.py

bench: install
	$(BIN)/python bench/bench_keras_export.py

# The same models x every deployment format, printed as a markdown table (docs/formats.md).
format-matrix: install
	$(BIN)/python bench/format_matrix.py

# SavedModel + LiteRT + ONNX + OpenVINO, verified, against Keras' own four unverified exports.
bench-formats: install
	$(BIN)/python bench/bench_formats.py

# exportkit vs orbax-export on one JAX function; then the >2 GiB export's time and peak memory.
bench-jax: install
	$(BIN)/python bench/bench_jax_export.py
	$(BIN)/python bench/bench_jax_large.py

# The docs site (docs/, mkdocs.yml): the config reference must match the schema, and the build
# has no warnings (broken links and anchors included).
docs: install
	$(BIN)/python docs/gen_config_reference.py --check
	$(BIN)/mkdocs build --strict --site-dir build/site

clean:
	rm -rf $(VENV) $(RAY_VENV) outputs multirun build dist *.egg-info
