# The two commands a new user needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo bench lint typecheck unit setup clean lock wheel

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

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache build dist *.egg-info
