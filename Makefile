# protoclr — see README.md. Everything runs through cargo's one (dev, optimised) profile.
SHELL := /bin/bash
CARGO_TARGET_DIR ?= $(HOME)/.cache/protoclr-target
export CARGO_TARGET_DIR
PROTOCLR_DATA ?= $(abspath ../shared/datasets)
export PROTOCLR_DATA
THREADS ?= $(shell nproc)
PROFILE ?= cpu
# Grids: one single-threaded cell per core. On the 2-core machine of README this trains 20 % more
# views per second in all than one 2-thread cell (2 × 248 against 400-416 views/s, fig5 cells) and
# overlaps the cells' evaluation phases: 3.5 min of wall time a cell against 5.2. The numbers are
# the same bit for bit (crates/cli/tests/determinism.rs: 1 and 2 threads agree).
WORKERS ?= $(shell nproc)
CELL_THREADS ?= 1
BIN := $(CARGO_TARGET_DIR)/debug/protoclr
# A failed cell makes `grid run` exit 1 after running all the others; the report still runs (`-`).
GRID_RUN = -$(BIN) grid run experiments/$(1).yaml --profile $(PROFILE) --workers $(WORKERS) --cell-threads $(CELL_THREADS)

test-slurm: build
	bash tests/slurm/run.sh $(BIN)

# Type-check the CUDA build with NVIDIA's toolkit from PyPI (minutes; not part of `test`).
check-cuda:
	bash tests/cuda/check.sh

.PHONY: test-slurm check-cuda build demo test lint bench figures reproduce-fig3 reproduce-fig4 reproduce-fig5 reproduce-tables reproduce-all data-lt

build:
	cargo build --bin protoclr

demo: build
	rm -rf runs/demo
	$(BIN) --threads $(THREADS) train --config configs/demo.yaml --out runs/demo

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

test: lint
	cargo test --workspace
	cargo build --bin protoclr
	bash tests/slurm/run.sh $(BIN)

bench: build
	bash benches/run.sh $(BIN)

figures: build
	$(BIN) report all --results results --out figures --profile $(PROFILE)

reproduce-fig3: build
	$(call GRID_RUN,fig3)
	$(BIN) report fig3 --results results --out figures --profile $(PROFILE)

# fig4/fig5: the α × λ grid, then (same invocation) its confirmation stage; claim (b) is decided in claims.
reproduce-fig4: build
	$(call GRID_RUN,fig4)
	$(BIN) report fig4 --results results --out figures --profile $(PROFILE)
	$(BIN) report claims --results results --out figures --profile $(PROFILE)

reproduce-fig5: build
	$(call GRID_RUN,fig5)
	$(BIN) report fig5 --results results --out figures --profile $(PROFILE)
	$(BIN) report claims --results results --out figures --profile $(PROFILE)

# The Imagenette-LT list files of `long_tail` (docs/formats.md, "make-lt"), written into the data
# root beside imagenette2-224/; deterministic, and a no-op when they are already there.
data-lt: build
	for rho in 10 100; do \
	  $(BIN) data make-lt --from $(PROTOCLR_DATA)/imagenette2-224 --imbalance $$rho \
	    --out $(PROTOCLR_DATA)/imagenette2-lt$$rho || exit 1; \
	done

reproduce-tables: build data-lt
	$(call GRID_RUN,table_cifar10)
	$(call GRID_RUN,table_cifar100)
	$(call GRID_RUN,long_tail)
	$(BIN) report tables --results results --out figures --profile $(PROFILE)

reproduce-all: reproduce-fig3 reproduce-fig4 reproduce-fig5 reproduce-tables
	$(BIN) report claims --results results --out figures --profile $(PROFILE)
