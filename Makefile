# imbtui: `make demo` sets up .venv and trains the default run; `make test` runs the whole test suite,
# then its numeric tests again under PyTorch's portable CPU kernels (ATEN_CPU_CAPABILITY=default), so
# a result that holds only under one CPU's AVX2/AVX-512 kernels fails here, not on a user's machine.
# The second pass leaves out the three slow numeric tests (two torchrun ranks, the full default run,
# bf16 + compile); it takes about 2 minutes of `make test` on 2 cores. pytest-xdist spreads the tests
# over one worker per core (WORKERS=1 runs them in one process).
PYTHON ?= python3
WORKERS ?= auto
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: setup demo test test-kernels test-fast bench samples methods-fmnist study clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: setup
	$(BIN)/imbtui train --ratio 100

test: setup
	$(BIN)/python -m pytest -n $(WORKERS) --durations=25
	$(MAKE) --no-print-directory test-kernels

test-kernels: setup
	ATEN_CPU_CAPABILITY=default $(BIN)/python -m pytest -n $(WORKERS) -m "numeric and not slow"

test-fast: setup
	$(BIN)/python -m pytest -n $(WORKERS) -m "not slow"

bench: setup
	$(BIN)/python bench/overhead.py

# the bundled sample store (sample_runs/README.md): MNIST-1D CE at ratios 1, 10, 100 and LDAM-DRW at 100,
# with the two opt-in lenses on (sharpness every 5 epochs, gradient conflict every 250 steps)
SAMPLES_STORE ?= sample_runs
SAMPLES := $(BIN)/imbtui sweep --epochs 20 --sharpness-every 5 --conflict-every 250 \
	--store $(SAMPLES_STORE) --name sample -q
samples: setup
	rm -rf $(SAMPLES_STORE)/runs
	$(SAMPLES) --ratio 1 10 100 --loss ce
	$(SAMPLES) --ratio 100 --loss ldam --drw 16

# every method on Fashion-MNIST-LT at ratio 100 (Debian's dataset-fashion-mnist package), 3 seeds,
# a short CPU schedule: 4 epochs, second stages of 2 (docs/methods.md, "Measured here")
FMNIST_STORE ?= fmnist-methods
FMNIST := $(BIN)/imbtui sweep --dataset fashion-mnist --ratio 100 --epochs 4 --stage2-epochs 2 \
	--seed 0 1 2 --dynamics minimal --store $(FMNIST_STORE) -j 2 -q
methods-fmnist: setup
	$(FMNIST) --loss ce weighted-ce cb focal balanced-softmax logit-adjusted
	$(FMNIST) --loss ldam --drw 3
	$(FMNIST) --sampler class-balanced square-root
	$(FMNIST) --smoothing 0.1
	$(FMNIST) --smoothing 0.3 --smoothing-tail 0.0
	$(FMNIST) --mixup 1
	$(FMNIST) --mixup 1 --drw 3
	$(FMNIST) --loss balanced-softmax --mixup 1
	$(FMNIST) --optimizer sam imbsam
	$(FMNIST) --weight-decay 5e-3 --max-norm 0.1
	$(FMNIST) --weight-decay 5e-3 --stage2 cb-finetune --max-norm 0.1 --stage2-weight-decay 0.1 \
		--stage2-lr 0.01
	$(FMNIST) --stage2 crt lws tau-norm
	$(BIN)/imbtui query method_comparison --store $(FMNIST_STORE)
	$(BIN)/imbtui query posthoc_adjustment --store $(FMNIST_STORE) -p taus=1

# the study in one command (README.md, "Study"): MNIST-1D at ratios 1, 10, 100 x seeds 0, 1, 2 with
# cross-entropy, 8 epochs, two runs at a time; runs already finished in the store are reused. The
# answer (summary.md, report.txt, figures) goes to $(STUDY_OUT).
STUDY_STORE ?= imbtui-runs
STUDY_OUT   ?= imbtui-study
study: setup
	$(BIN)/imbtui study --ratios 1 10 100 --seeds 0 1 2 --methods ce --epochs 8 -j 2 \
		--store $(STUDY_STORE) --out $(STUDY_OUT)

clean:
	rm -rf $(VENV) build dist *.egg-info
