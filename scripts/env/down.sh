#!/usr/bin/env bash
# `make env-down`: stops everything `make env-up` started and removes its state (not the cache).
. "$(dirname "$0")/lib.sh"
. "$ENV_SCRIPTS/services.sh"
. "$ENV_SCRIPTS/kafka-cluster.sh"
node_down
remove_kafka_cluster
for ((i = ${#SERVICES[@]} - 1; i >= 0; i--)); do "stop_${SERVICES[$i]}"; done
rm -rf "$FERRY_DIR" "$PG_DIR"
log "environment stopped and its state removed"
