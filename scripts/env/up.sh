#!/usr/bin/env bash
# `make env-up`: installs what is missing, starts every service on 127.0.0.1 that is not already
# running, waits until each is ready and writes .ferry/env. Idempotent.
. "$(dirname "$0")/lib.sh"
. "$ENV_SCRIPTS/services.sh"
. "$ENV_SCRIPTS/kafka-cluster.sh"
started=$SECONDS

bash "$ENV_SCRIPTS/install.sh"
mkdir -p "$STATE" "$LOGS" "$RUN"
refuse_foreign_listeners

node_prepare
# The slow starters first, so they boot while the control plane comes up.
start_postgres
start_kafka
kafka_cluster_up
make_pki
make_node_pki
start_etcd
wait_for etcd 60 etcd_ready
start_apiserver
wait_for kube-apiserver 120 apiserver_ready
start_controller-manager
start_scheduler
start_kwok
ensure_nodes
wait_for "KWOK nodes" 120 nodes_ready
node_up
wait_for PostgreSQL 60 postgres_ready
wait_for Kafka 120 kafka_ready
kafka_cluster_wait

tmp=$FERRY_DIR/env.tmp
cat > "$tmp" <<ENV
# Written by \`make env-up\`; \`. .ferry/env\` to use the local environment.
export KUBECONFIG='$(KUBECONFIG_FILE)'
export FERRY_KAFKA_BOOTSTRAP='127.0.0.1:$KAFKA_PORT'
export FERRY_KAFKA_SECURITY_PROTOCOL='SASL_PLAINTEXT'
export FERRY_KAFKA_SASL_MECHANISM='SCRAM-SHA-512'
export FERRY_KAFKA_USERNAME='admin'
export FERRY_KAFKA_PASSWORD='$(cat "$STATE/kafka/admin-password")'
# A SCRAM user with no ACLs, for tests that check the authorizer refuses.
export FERRY_KAFKA_NOACL_USERNAME='ferry-noacl'
export FERRY_KAFKA_NOACL_PASSWORD='$(cat "$STATE/kafka/noacl-password")'
export FERRY_DATABASE_URL='postgresql://postgres:$(cat "$STATE/postgres-password")@127.0.0.1:$PG_PORT/postgres'
# Stops and starts one service (kafka, postgres, ...), for tests that restart them; it needs
# the same port offset as this environment.
export FERRY_ENV_CTL='$ENV_SCRIPTS/ctl.sh'
export FERRY_PORT_OFFSET='${FERRY_PORT_OFFSET:-0}'
export PATH="$K8S_BIN:$TOOLS_BIN:$PROMTOOL_BIN:\$PATH"
$(node_env)
ENV
kafka_cluster_env >> "$tmp"
mv "$tmp" "$FERRY_DIR/env"
log "environment ready in $((SECONDS - started))s: . .ferry/env (logs in $LOGS)"
