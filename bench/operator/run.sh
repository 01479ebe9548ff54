#!/usr/bin/env bash
# make bench-operator: runs the operator benchmarks (1,000 EventTopics, 1,000 EventConsumers,
# 10,000 EventTopics; or the one scenario named as $1) against the local environment with
# the release build of ferry-operator (built by the Makefile target first).
set -euo pipefail
cd "$(dirname "$0")/../.."
target=${CARGO_TARGET_DIR:-target}
exec "$target/release/bench-operator" "$target/release/ferry-operator" "$@"
