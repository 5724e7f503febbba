# Everything a fresh machine needs: `make demo` and `make test` set up the environment themselves.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: venv demo test test-fast bench clean

venv: $(VENV)/.installed

# Idempotent: re-installs only when pyproject.toml changed.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[all]'
	touch $@

demo: venv
	$(BIN)/vau-annotate demo --run outputs/demo

test: venv
	$(BIN)/python -m pytest -q

bench: venv
	$(BIN)/python benchmarks/bench_sampling.py

clean:
	rm -rf $(VENV) outputs/demo .pytest_cache
