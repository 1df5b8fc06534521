# imbtui: `make demo` sets up .venv and trains the default run; `make test` runs the whole test suite,
# then its numeric tests again under PyTorch's portable CPU kernels (ATEN_CPU_CAPABILITY=default), so
# a result that holds only under one CPU's AVX2/AVX-512 kernels fails here, not on a user's machine.
# The second pass leaves out the three slow numeric tests (two torchrun ranks, the full default run,
# bf16 + compile), which keeps `make test` near 20 minutes on 2 cores.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: setup demo test test-kernels test-fast bench samples clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: setup
	$(BIN)/imbtui train --ratio 100

test: setup
	$(BIN)/python -m pytest
	$(MAKE) --no-print-directory test-kernels

test-kernels: setup
	ATEN_CPU_CAPABILITY=default $(BIN)/python -m pytest -m "numeric and not slow"

test-fast: setup
	$(BIN)/python -m pytest -m "not slow"

bench: setup
	$(BIN)/python bench/overhead.py

# the bundled sample store (sample_runs/README.md): MNIST-1D CE at ratios 1, 10, 100 and LDAM-DRW at 100
samples: setup
	rm -rf sample_runs/runs
	$(BIN)/imbtui sweep --ratio 1 10 100 --loss ce --epochs 20 --store sample_runs --name sample -q
	$(BIN)/imbtui sweep --ratio 100 --loss ldam --drw 16 --epochs 20 --store sample_runs --name sample -q

clean:
	rm -rf $(VENV) build dist *.egg-info
