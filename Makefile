# The one entry point for developers and CI alike (CI runs `make test` through .ci/run).
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
export FERRY_CACHE ?= $(HOME)/.cache/ferry
# Where cargo puts release builds (CARGO_TARGET_DIR, when set, moves them).
RELEASE := $(or $(CARGO_TARGET_DIR),target)/release

.PHONY: help env-up env-down images shop-images demo demo-down test shop-test lint generate generate-check bench-operator bench-relay bench-worker bench-worker-build bench-worker-tracing bench-webhook

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

env-up: ## install/build what is missing (cached) and start PostgreSQL, Kafka and Kubernetes on 127.0.0.1
	@bash scripts/env/up.sh

env-down: ## stop everything env-up started and remove its state (the cache stays)
	@bash scripts/env/down.sh

# The broker-failover tests need the three-broker Kafka cluster beside the single broker; `make
# test` starts it with the rest (FERRY_KAFKA_CLUSTER=1 make env-up does the same by hand).
test: export FERRY_KAFKA_CLUSTER := 1

images: env-up ## build the ferry-operator and ferry-sidecar images (OCI, no Docker) into the real node's containerd
	@bash scripts/env/images.sh

shop-images: env-up ## build the shop's three Django service images (OCI, no Docker: host python3 + pinned venv) into the real node's containerd
	@bash scripts/env/shop-images.sh

# The binaries the images and `kubectl ferry` need, once (scripts/env/images.sh builds them).
demo: env-up ## the shop on Ferry on the real node: chart + shop installed, driven through its APIs, every check printed
	@bash scripts/env/images.sh
	@bash scripts/env/shop-images.sh
	@bash scripts/env/demo.sh

demo-down: ## remove the shop and the Ferry release make demo installed (the environment stays)
	@bash scripts/env/demo-down.sh

lint: ## rustfmt and clippy, warnings are errors
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

# The images hold the binaries `cargo test` builds (built once: `cargo build` alone unifies
# features without the dev-dependencies and would compile them a second time).
# On a fresh machine env-up's Go builds and Rust's build each leave a core idle much of the time
# (linking, downloads, build scripts), so Rust builds in the background meanwhile
# (scripts/prebuild.sh, log in .ferry/logs/prebuild.log); the steps after report any error.
test: ## env-up, lint, images of the tested binaries, every test against the real services, then the log audit
	@bash scripts/env/install.sh packages
	@setsid bash scripts/prebuild.sh & prebuild=$$!; trap 'kill -- -$$prebuild 2>/dev/null || true' EXIT; \
	  bash scripts/env/up.sh; wait $$prebuild
	@$(MAKE) --no-print-directory lint generate-check
	cargo test --workspace --locked --no-run
	FERRY_IMAGE_BUILD=no bash scripts/env/images.sh
	@rm -rf .ferry/logs/tests; mkdir -p .ferry/logs/tests
	FERRY_TEST_LOGS=$(CURDIR)/.ferry/logs/tests cargo test --workspace --locked 2>&1 | tee .ferry/logs/tests/cargo-test.log
	bash examples/shop/test.sh 2>&1 | tee .ferry/logs/tests/shop-test.log
	cargo run -q --locked -p ferry-testkit --bin log-audit -- .ferry/logs /var/lib/ferry-node/pod-logs

shop-test: env-up ## the shop example's Django unit tests (outbox in one transaction) against the env's PostgreSQL
	bash examples/shop/test.sh

# The chart ships the same files (charts/ferry/crds/, installed by Helm before the templates).
generate: ## write crds/*.yaml and the chart's copy from the Rust types (ferry-operator crdgen), docs/api.md from the CRDs (apidoc), the chart's version from Cargo.toml
	cargo run --quiet --locked -p ferry-operator -- crdgen --out-dir crds
	rm -f charts/ferry/crds/*.yaml && cp crds/*.yaml charts/ferry/crds/
	cargo run --quiet --locked -p ferry-operator -- apidoc --crd-dir crds --out docs/api.md
	v=$$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml); \
	sed -i -e "s/^version: .*/version: $$v/" -e "s/^appVersion: .*/appVersion: \"$$v\"/" charts/ferry/Chart.yaml

generate-check: ## fail when crds/, charts/ferry/crds/ or docs/api.md differs from what the Rust types generate
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	cargo run --quiet --locked -p ferry-operator -- crdgen --out-dir "$$tmp/crds" 2>/dev/null; \
	cargo run --quiet --locked -p ferry-operator -- apidoc --crd-dir "$$tmp/crds" --out "$$tmp/api.md" 2>/dev/null; \
	if ! diff -ru crds "$$tmp/crds" >&2; then echo "crds/ is out of date: run make generate" >&2; exit 1; fi; \
	if ! diff -ru charts/ferry/crds "$$tmp/crds" >&2; then echo "charts/ferry/crds/ is out of date: run make generate" >&2; exit 1; fi; \
	if ! diff -u docs/api.md "$$tmp/api.md" >&2; then echo "docs/api.md is out of date: run make generate" >&2; exit 1; fi

bench-operator: env-up ## 1,000 EventTopics; 1,000 EventConsumers (CPU per lag round); 10,000 EventTopics: seconds until Ready, peak RSS, baselines
	cargo build --release --locked -p ferry-operator --bin ferry-operator -p ferry-bench --bin bench-operator
	bash bench/operator/run.sh

bench-webhook: env-up ## 1,000 opted-in pod creations with the injection webhook and without: p50/p99 added (release)
	cargo build --release --locked -p ferry-operator --bin ferry-operator -p ferry-bench --bin bench-webhook
	$(RELEASE)/bench-webhook $(RELEASE)/ferry-operator

bench-relay: env-up ## outbox relay benchmark: drain rate, steady-state latency, RSS, with baselines (release build)
	cargo build --release --locked -p ferry-sidecar --bin ferry-sidecar -p ferry-bench --bin bench-relay
	FERRY_SIDECAR_BIN=$(RELEASE)/ferry-sidecar $(RELEASE)/bench-relay

# The worker benchmark's two binaries, for both bench-worker targets.
bench-worker-build: env-up
	cargo build --release --locked -p ferry-sidecar --bin ferry-sidecar -p ferry-bench --bin bench-worker

bench-worker: bench-worker-build ## worker throughput per ordering, p99 latency, RSS and the key-concurrency table (release)
	FERRY_SIDECAR_BIN=$(RELEASE)/ferry-sidecar $(RELEASE)/bench-worker

bench-worker-tracing: bench-worker-build ## what tracing costs the worker: bench-worker's throughput runs off/on in PAIRS pairs (5), means
	RELEASE=$(RELEASE) PAIRS=$(or $(PAIRS),5) bench/worker-tracing-pairs.sh
