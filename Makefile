# The two commands of the README:  `make demo`  and  `make test`.
# Both create .venv/ with everything they need on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test install bench lint clean

$(STAMP): pyproject.toml setup.cfg
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/ittc demo

# The scheme's tests run twice: with the default backend (libcrypto where it is usable),
# then under the portable gmpy2 backend (about 15 s).
SCHEME_TESTS := tests/test_ct.py tests/test_scheme.py tests/test_vectors.py tests/hypothesis

test: $(STAMP)
	$(PY) -m pytest
	$(PY) -m pytest -q --ct-backend gmpy2 $(SCHEME_TESTS)

lint: $(STAMP)
	$(PY) -m pip install --quiet mypy ruff
	$(VENV)/bin/ruff check ittc nodes tests benchmarks
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
