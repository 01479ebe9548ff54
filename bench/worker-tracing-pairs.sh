#!/usr/bin/env bash
# What tracing costs the worker, in pairs: `make bench-worker`'s throughput runs with tracing off,
# then on (every span exported to the benchmark's dropping receiver), PAIRS times, alternating so
# a slow stretch of the machine weighs on both sides; then the mean events/s and worker CPU per
# event of each side, per ordering and max in flight. Single runs vary by ±25% on 2 cores, so one
# pair says little. The raw runs go to $LOG. Run it through make, which starts the environment,
# builds both binaries and says where ($RELEASE):
#
#   make bench-worker-tracing PAIRS=5
set -euo pipefail
cd "$(dirname "$0")/.."
target=${RELEASE:?run it as make bench-worker-tracing, which builds the binaries}
PAIRS=${PAIRS:-5}
LOG=${LOG:-$(mktemp -t worker-tracing-pairs.XXXXXX)}
export FERRY_SIDECAR_BIN=$target/ferry-sidecar FERRY_BENCH_SECTIONS=throughput
for i in $(seq 1 "$PAIRS"); do
    for tracing in off on; do
        echo "== pair $i tracing $tracing" | tee -a "$LOG"
        FERRY_BENCH_TRACING=$tracing "$target/bench-worker" 2>&1 | tee -a "$LOG" | grep -E 'ordering=|tracing on:'
    done
done
echo "== means of $PAIRS pairs (raw runs in $LOG)"
printf "%-18s %22s %22s %8s\n" "ordering, in flight" "off: events/s (CPU)" "on: events/s (CPU)" "change"
awk '
/^== pair/ { side = $5 }
/ordering=/ {
    ordering = $1; sub("ordering=", "", ordering)
    in_flight = $4; sub(":", "", in_flight)
    match($0, /CPU [0-9]+/); cpu = substr($0, RSTART + 4, RLENGTH - 4)
    k = ordering ", " in_flight; cases[k] = 1
    n[k, side]++; rate[k, side] += $5; us[k, side] += cpu
}
END {
    for (k in cases) {
        off = rate[k, "off"] / n[k, "off"]; on = rate[k, "on"] / n[k, "on"]
        printf "%-18s %12.0f (%3.0f µs) %12.0f (%3.0f µs) %+7.1f%%\n", k, off, us[k, "off"] / n[k, "off"], on, us[k, "on"] / n[k, "on"], 100 * (on / off - 1)
    }
}' "$LOG" | sort
