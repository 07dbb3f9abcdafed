# Ryzanstein — the targets a newcomer needs. `make` (or `make help`) lists them.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

CARGO ?= cargo
CACHE_DIR ?= $(HOME)/.cache/ryzanstein
CARGO_TARGET_DIR ?= $(CACHE_DIR)/target
export CARGO_TARGET_DIR
VENV ?= $(CACHE_DIR)/venv
export RYZANSTEIN_VENV := $(VENV)
PYTHON := $(VENV)/bin/python
BIN := $(CARGO_TARGET_DIR)/release/ryzanstein

.PHONY: help setup setup-bench model build demo test bench references fmt lint crds crds-check

help: ## List the targets (this text)
	@echo "Ryzanstein — CPU-first LLM inference server (OpenAI-compatible API)"
	@echo
	@echo "usage: make <target>"
	@echo
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*## "}; {printf "  %-12s %s\n", $$1, $$2}'
	@echo
	@echo "Variables: BENCH=1 (setup also installs llama-cpp-python), CARGO_TARGET_DIR=$(CARGO_TARGET_DIR)"

setup: ## Python venv in ~/.cache/ryzanstein/venv (openai, numpy; BENCH=1 adds llama-cpp-python)
	scripts/setup-python.sh $(if $(filter 1,$(BENCH)),--bench)

setup-bench: ## Python venv with llama-cpp-python 0.3.36 (compiles llama.cpp, ~10 min once)
	scripts/setup-python.sh --bench

model: ## Fetch the bundled model (SmolLM2-135M-Instruct Q4_1 GGUF) and verify its sha256
	scripts/fetch-model.sh

build: ## Build the release binary `ryzanstein`
	$(CARGO) build --release -p ryzanstein-server --bin ryzanstein

demo: build model ## Start the server, ask "What is the capital of France?", print the answer
	RYZANSTEIN_BIN=$(BIN) scripts/demo.sh

test: setup model crds-check ## Run every test (release build: the model tests run real inference)
	$(CARGO) test --workspace --release --no-fail-fast

bench: setup-bench model build ## Compare speed and memory with llama.cpp; writes docs/BENCHMARKS.md
	$(PYTHON) scripts/bench.py --bin $(BIN) --write docs/BENCHMARKS.md

# References come from llama.cpp built for AVX2 (not for this CPU): an AVX-512 build sums in
# another order and gives other logits. A separate venv keeps the bench's native build intact.
REFS_VENV ?= $(CACHE_DIR)/venv-refs
REFS_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF

references: model ## Regenerate server/tests/data/llama_refs/*.json with llama.cpp (AVX2 build, own venv)
	RYZANSTEIN_VENV=$(REFS_VENV) CMAKE_ARGS="$(REFS_CMAKE_ARGS)" scripts/setup-python.sh --bench
	$(REFS_VENV)/bin/python scripts/make_references.py

crds: ## Regenerate the CRD YAML in crds/ and charts/ryzanstein/crds/ from operator/src/crd/
	$(CARGO) run --release -q -p ryzanstein-operator --bin crdgen

crds-check: ## Fail if the committed CRD YAML differs from what operator/src/crd/ generates
	$(CARGO) run --release -q -p ryzanstein-operator --bin crdgen -- --check

fmt: ## Format all Rust code
	$(CARGO) fmt --all

lint: ## rustfmt check + clippy with warnings as errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
