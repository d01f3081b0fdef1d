# The two commands a new user needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo bench lint typecheck unit setup clean lock wheel stress soak

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -n 2

test: lint typecheck unit

demo: $(STAMP)
	$(BIN)/python examples/demo.py

bench: $(STAMP)
	$(BIN)/python -m benchmarks

# Pinned, hashed dependencies for the container image (requirements/README.md).
LOCK_TARGET := --python-version 3.11 --python-platform x86_64-manylinux_2_28
LOCK_FLAGS ?=
lock: $(STAMP)
	$(BIN)/uv pip compile --quiet --generate-hashes $(LOCK_TARGET) $(LOCK_FLAGS) \
		--custom-compile-command "make lock" -o requirements/bridge.lock pyproject.toml
	$(BIN)/uv pip compile --quiet --generate-hashes $(LOCK_TARGET) $(LOCK_FLAGS) \
		--custom-compile-command "make lock" -o requirements/build.lock requirements/build.in

# The wheel, byte-identical for the same commit (scripts/build-wheel.sh).
wheel: $(STAMP)
	scripts/build-wheel.sh $(BIN)/python dist

# The attack scenarios of tests/stress at full scale (make test runs a reduced form).
stress: $(STAMP)
	SHROUD_STRESS=full $(BIN)/pytest -s tests/stress

# 1,000 sessions with streams for 10 minutes; prints RSS every 30 s and the slope. Not in CI.
soak: $(STAMP)
	$(BIN)/python -m tests.stress.soak --sessions 1000 --minutes 10

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache build dist *.egg-info
