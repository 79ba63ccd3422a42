# Two commands for a fresh machine: `make demo` and `make test`. Both create .venv and install.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch first, pinned: a bare `torch` requirement would pull a multi-GB CUDA build.
TORCH  ?= torch==2.13.0
DEMO_OUT ?= out/demo_mapping.xlsx
# the demo's state folder (made anew by every make demo): review apply --next learns from it
DEMO_STATE ?= out/demo_state

.PHONY: demo test test-openvino bench install install-dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# pip byte-compiles what it installs one file at a time; compileall does it on every core. On 2
# cores, torch then taxmig with its test extras into a fresh venv: 58 s with pip compiling, 23 s
# with --no-compile and then 24 s of compileall -j 0. Byte code is only a cache: a file that does
# not compile (an old syntax in some package's tests) is left without, as pip leaves it.
COMPILE = $(BIN)/python -m compileall -q -j 0 $(VENV)/lib > /dev/null || true

$(VENV)/.installed: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/python -m pip install --quiet --no-compile $(TORCH)
	$(BIN)/python -m pip install --quiet --no-compile -e .
	$(COMPILE)
	touch $@

# the test set-up installs everything in one go (a superset of install's), then marks both done
$(VENV)/.installed-dev: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/python -m pip install --quiet --no-compile $(TORCH)
	$(BIN)/python -m pip install --quiet --no-compile -e '.[dev,static,ray,openvino,onnx]'
	$(COMPILE)
	touch $(VENV)/.installed $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

demo: install
	rm -rf $(DEMO_STATE)
	$(BIN)/taxmig migrate sample_catalogs/bigbasket_sample.csv \
		--target-taxonomy sample_catalogs/google_taxonomy_subset.txt \
		--source-category category,sub_category \
		-o $(DEMO_OUT) --overwrite --state $(DEMO_STATE)
	@echo "Open $(DEMO_OUT); its first page (Summary, 'What to do with this file') says the same as this:"
	@echo "fill the 'decision' column in Category decisions (a whole source category) and Review (one product;"
	@echo "the first rows, numbered in 'question', teach the most), save the workbook, then read it back:"
	@echo "  $(BIN)/taxmig review apply $(DEMO_OUT) --state $(DEMO_STATE) -o $(DEMO_OUT:.xlsx=_final.csv) --next $(DEMO_OUT:.xlsx=_round1.xlsx)"

# one test process per core, each test file whole in one of them (its module fixtures built once),
# the longest files first (tests/conftest.py orders them and gives each process one torch thread)
# taxmig's own modules compiled first: the processes the tests start then read them as byte code
test: install-dev
	$(BIN)/python -m compileall -q -j 0 migrate models train
	$(BIN)/python -m pytest -n auto --dist loadfile --no-loadscope-reorder

# the OpenVINO and ONNX backends and taxmig quantize alone (make test runs them with the rest)
test-openvino: install-dev
	$(BIN)/python -m pytest tests/test_backends.py tests/test_onnx_backend.py

bench: install-dev
	$(BIN)/python bench/migrate_bench.py

clean:
	rm -rf $(VENV) out build *.egg-info
