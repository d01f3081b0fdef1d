# The two commands a new user needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP := --disable-pip-version-check --quiet

# The SDK's tests run against three openai releases (docs/frameworks.md, "Compatibility"):
# - $(VENV): the newest openai 3.x, with every framework whose current release accepts it;
# - $(VENV2): the newest openai 2.x, with every framework whose current release accepts it
#   (LlamaIndex requires openai<3);
# - $(VENV1): the oldest openai the SDK supports (pyproject.toml's lower bound).
VENV2 := .venv-openai2
STAMP2 := $(VENV2)/.installed
VENV1 := .venv-openai1
STAMP1 := $(VENV1)/.installed
OPENAI_LOWER_BOUND := 1.55.3

.PHONY: test demo bench lint typecheck unit unit-openai2 unit-openai1 setup clean lock wheel framework-resolution \
	stress soak

setup: $(STAMP) $(STAMP2) $(STAMP1)

$(STAMP): pyproject.toml Makefile
	@echo "== setting up $(VENV): shroud-sdk, openai 3.x, test tools, LangChain, pydantic-ai, LiteLLM (first run: about a minute)"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install $(PIP) --upgrade pip
	$(BIN)/python -m pip install $(PIP) -e '.[dev,langchain,pydantic-ai,litellm]'
	@$(BIN)/python -c 'import openai; print("== $(VENV) ready: openai", openai.__version__)'
	touch $(STAMP)

$(STAMP2): pyproject.toml Makefile
	@echo "== setting up $(VENV2): openai 2.x, LangChain, LlamaIndex, LiteLLM (first run: about a minute)"
	test -x $(VENV2)/bin/python || $(PYTHON) -m venv $(VENV2)
	$(VENV2)/bin/python -m pip install $(PIP) --upgrade pip
	$(VENV2)/bin/python -m pip install $(PIP) -e '.[test,langchain,llamaindex,litellm]' 'openai<3'
	@$(VENV2)/bin/python -c 'import openai; print("== $(VENV2) ready: openai", openai.__version__)'
	touch $(STAMP2)

$(STAMP1): pyproject.toml Makefile
	@echo "== setting up $(VENV1): openai $(OPENAI_LOWER_BOUND), the oldest supported (first run: about 20 s)"
	test -x $(VENV1)/bin/python || $(PYTHON) -m venv $(VENV1)
	$(VENV1)/bin/python -m pip install $(PIP) --upgrade pip
	$(VENV1)/bin/python -m pip install $(PIP) -e '.[test]' 'openai==$(OPENAI_LOWER_BOUND)'
	touch $(STAMP1)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -n 2

# The openai-facing tests again, under the other openai majors.
unit-openai2: $(STAMP2)
	$(VENV2)/bin/pytest -n 2 -p no:cacheprovider tests/sdk tests/examples tests/integrations

unit-openai1: $(STAMP1)
	$(VENV1)/bin/pytest -n 2 -p no:cacheprovider tests/sdk tests/examples

test: lint typecheck unit unit-openai2 unit-openai1

demo: $(STAMP)
	$(BIN)/python examples/demo.py

bench: $(STAMP)
	$(BIN)/python -m benchmarks

# Whether each framework's newest release installs beside the SDK, per openai major (network).
framework-resolution: $(STAMP)
	$(BIN)/python scripts/framework_resolution.py

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
	rm -rf $(VENV) $(VENV2) $(VENV1) .mypy_cache .pytest_cache .ruff_cache build dist *.egg-info
