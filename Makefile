# The one entry point for developers and CI alike (CI runs `make test` through .ci/run).
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
export FERRY_CACHE ?= $(HOME)/.cache/ferry

.PHONY: help env-up env-down test lint fmt unit bench-worker

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

env-up: ## install/build what is missing (cached) and start PostgreSQL, Kafka and Kubernetes on 127.0.0.1
	@bash scripts/env/up.sh

env-down: ## stop everything env-up started and remove its state (the cache stays)
	@bash scripts/env/down.sh

lint: ## rustfmt and clippy, warnings are errors
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

test: env-up lint ## env-up, lint, then every test against the real services
	cargo test --workspace --locked

bench-worker: env-up ## worker throughput per ordering, p99 latency, RSS and the key-concurrency table (release)
	cargo build --release --locked -p ferry-sidecar --bin ferry-sidecar --example bench-worker
	FERRY_SIDECAR_BIN=target/release/ferry-sidecar target/release/examples/bench-worker
