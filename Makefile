# The two commands of the README:  `make demo`  and  `make test`.
# Both create .venv/ with everything they need on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test check unit install bench lint clean

$(STAMP): pyproject.toml setup.cfg
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,check]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/ittc demo

# The scheme's tests run twice: with the default backend (libcrypto where it is usable),
# then under the portable gmpy2 backend (about 15 s); each run's header names its backend.
SCHEME_TESTS := tests/test_ct.py tests/test_scheme.py tests/test_vectors.py tests/hypothesis

test: $(STAMP)
	$(PY) -m pytest
	$(PY) -m pytest --ct-backend gmpy2 $(SCHEME_TESTS)

# The fast unit run: no test that starts a server or a node process.
unit: $(STAMP)
	$(PY) -m pytest -q -m "not network"

# The habits, checked by tools (CI runs this before the tests): lint, format, strict
# types, and the import contract of the layers (setup.cfg [importlinter]).
CODE := ittc nodes tests benchmarks proto
check: $(STAMP)
	$(VENV)/bin/ruff check $(CODE)
	$(VENV)/bin/ruff format --check $(CODE)
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

lint: check

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
