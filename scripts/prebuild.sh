#!/usr/bin/env bash
# Warms Rust's build cache with what `make test` compiles next (the tests, clippy, the operator
# binary `make generate-check` runs) while `make env-up` builds and starts the environment.
# Best effort: a compile error here is only logged; the same command in `make test` reports it.
set -uo pipefail
cd "$(dirname "$0")/.."
log=.ferry/logs/prebuild.log
mkdir -p "$(dirname "$log")"
started=$SECONDS
{
  cargo test --workspace --locked --no-run &&
    cargo clippy --workspace --all-targets --locked -- -D warnings &&
    cargo build --locked -p ferry-operator --bin ferry-operator
} >"$log" 2>&1 || echo "prebuild: a Rust build failed (see $log); make test's own step will say why" >&2
echo "prebuild: Rust build cache warmed in $((SECONDS - started))s (log: $log)" >&2
