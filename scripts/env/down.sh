#!/usr/bin/env bash
# `make env-down`: stops everything `make env-up` started and removes its state (not the cache).
. "$(dirname "$0")/lib.sh"
. "$ENV_SCRIPTS/services.sh"
. "$ENV_SCRIPTS/kafka-cluster.sh"
node_down
remove_kafka_cluster
for ((i = ${#SERVICES[@]} - 1; i >= 0; i--)); do "stop_${SERVICES[$i]}"; done
# $PG_DIR is keyed by port: another checkout's database there is left alone.
if [ ! -d "$PG_DIR" ] || postgres_ours; then rm -rf "$PG_DIR"; fi
rm -rf "$FERRY_DIR"
log "environment stopped and its state removed"
