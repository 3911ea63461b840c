# Two commands on a fresh machine: `make quickstart` and `make test`.
# Both create .venv (Python >= 3.11) from this repo's own pyproject.toml first.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.statekit-installed

.PHONY: quickstart test lab bench peers install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,langgraph,openai-agents,bench]"
	touch $(STAMP)

install: $(STAMP)

## Run the quickstart notebook top to bottom on the embedded SQLite store, printing what it shows.
quickstart: $(STAMP)
	cd notebooks && ../$(PY) -m jupyter nbconvert --to markdown --execute --stdout 01-quickstart.ipynb \
		--NbConvertBase.display_data_priority="['text/markdown','text/plain']" 2>/dev/null

## The whole test suite: SQLite and PostgreSQL, real kernels, the notebooks (nbval) and the browser test.
test: $(STAMP)
	$(PY) -m pytest

## The frameworks' own test suites against statekit's adapters (downloads their source archives once).
peers: $(STAMP)
	$(PY) tests/peers/statekit_peers.py langgraph --backend file postgres memory
	$(PY) tests/peers/statekit_peers.py openai-agents

## Open JupyterLab on the tutorials.
lab: $(STAMP)
	$(PY) -m jupyter lab notebooks/

## The benchmarks, side by side with the tools users would otherwise pick.
bench: $(STAMP)
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) .pytest_cache
