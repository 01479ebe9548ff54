#!/usr/bin/env bash
# make bench-operator: runs the 1,000-EventTopic benchmark against the local environment with
# the release build of ferry-operator (built by the Makefile target first).
set -euo pipefail
cd "$(dirname "$0")/../.."
exec target/release/bench-operator target/release/ferry-operator
