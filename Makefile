# Two commands for a fresh machine: `make demo` and `make test`. Both create .venv and install.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch first, pinned: a bare `torch` requirement would pull a multi-GB CUDA build.
TORCH  ?= torch==2.13.0
DEMO_OUT ?= out/demo_mapping.xlsx

.PHONY: demo test test-all bench install install-dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[dev,static,ray]'
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

demo: install
	$(BIN)/taxmig migrate sample_catalogs/bigbasket_sample.csv \
		--target-taxonomy sample_catalogs/google_taxonomy_subset.txt \
		--source-category category,sub_category \
		-o $(DEMO_OUT) --overwrite
	@echo "Open $(DEMO_OUT): Summary, Category decisions, Review, Mapping (decision drop-downs), Crosswalk, Rejects, Parameters."

test: install-dev
	$(BIN)/python -m pytest

test-all: install-dev
	$(BIN)/python -m pytest -m ""

bench: install-dev
	$(BIN)/python bench/migrate_bench.py

clean:
	rm -rf $(VENV) out build *.egg-info
