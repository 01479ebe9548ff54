# The optional three-broker Kafka cluster (KRaft, every node broker and controller, replication
# factor 3, min.insync.replicas 2) for the tests that kill a broker. Sourced after services.sh.
# `FERRY_KAFKA_CLUSTER=1 make env-up` starts it (`make test` does), `=0` stops it and removes its
# state, unset keeps it as it is; `ctl.sh kill|start|stop|restart kafka-N` acts on node N.
# shellcheck shell=bash

KAFKA_NODES=(1 2 3)
# Three JVMs beside everything else on a small machine: half the single broker's heap each.
KAFKA_NODE_JAVA=(java -Xms128m -Xmx384m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true
  "-Dlog4j2.configurationFile=$ENV_SCRIPTS/kafka/log4j2.properties" -cp "$KAFKA_LIBS/*")
KAFKA_CLUSTER_DIR=$STATE/kafka-cluster

kafka_node_port() { echo $((KAFKA_CLUSTER_PORT + $1 - 1)); }
kafka_node_controller_port() { echo $((KAFKA_CLUSTER_PORT + ${#KAFKA_NODES[@]} + $1 - 1)); }
kafka_cluster_bootstrap() {
  local n out=()
  for n in "${KAFKA_NODES[@]}"; do out+=("127.0.0.1:$(kafka_node_port "$n")"); done
  (IFS=,; echo "${out[*]}")
}

# Whether this environment has the cluster: it was formatted and not removed since.
kafka_cluster_enabled() { [ -f "$KAFKA_CLUSTER_DIR/formatted" ]; }

# Formats the three nodes' storage once, with the single broker's admin and no-ACL passwords.
format_kafka_cluster() {
  kafka_cluster_enabled && return 0
  [ -f "$STATE/kafka/admin-password" ] || die "the single broker's state is missing: start it first"
  local admin_pw noacl_pw voters="" n cluster_id
  admin_pw=$(cat "$STATE/kafka/admin-password"); noacl_pw=$(cat "$STATE/kafka/noacl-password")
  rm -rf "$KAFKA_CLUSTER_DIR"; mkdir -p "$KAFKA_CLUSTER_DIR" "$LOGS"
  for n in "${KAFKA_NODES[@]}"; do
    voters+="${voters:+,}$n@127.0.0.1:$(kafka_node_controller_port "$n")"
  done
  # A cluster id as StorageTool's random-uuid makes it (16 random bytes, URL-safe base64, no
  # padding, not starting with '-'), without starting a JVM for it.
  cluster_id=-
  while [[ $cluster_id == -* ]]; do
    cluster_id=$(openssl rand 16 | base64 | tr '+/' '-_' | tr -d '=')
  done
  local tool=kafka.tools.StorageTool
  grep -aq "kafka/tools/StorageTool.class" "$KAFKA_LIBS"/kafka_2.13-*.jar \
    || tool=org.apache.kafka.tools.StorageTool
  local pids=()
  for n in "${KAFKA_NODES[@]}"; do
    mkdir -p "$KAFKA_CLUSTER_DIR/$n/data"
    sed -e "s#@NODE_ID@#$n#g" -e "s#@VOTERS@#$voters#g" \
      -e "s#@PORT@#$(kafka_node_port "$n")#g" -e "s#@CONTROLLER_PORT@#$(kafka_node_controller_port "$n")#g" \
      -e "s#@DATA@#$KAFKA_CLUSTER_DIR/$n/data#g" -e "s#@ADMIN_PASSWORD@#$admin_pw#g" \
      "$ENV_SCRIPTS/kafka/cluster.properties.in" > "$KAFKA_CLUSTER_DIR/$n/server.properties"
    # Every node gets the same users (whichever controller is elected first writes them).
    "${KAFKA_NODE_JAVA[@]}" "$tool" format -t "$cluster_id" -c "$KAFKA_CLUSTER_DIR/$n/server.properties" \
      --add-scram "SCRAM-SHA-512=[name=admin,password=$admin_pw]" \
      --add-scram "SCRAM-SHA-512=[name=ferry-noacl,password=$noacl_pw]" >>"$LOGS/kafka-$n.log" 2>&1 &
    pids+=($!)
  done
  for n in "${!pids[@]}"; do
    wait "${pids[$n]}" || die "formatting Kafka node ${KAFKA_NODES[$n]} failed; see $LOGS/kafka-${KAFKA_NODES[$n]}.log"
  done
  touch "$KAFKA_CLUSTER_DIR/formatted"
}

# start_kafka_node N: starts node N unless it runs (a no-op then), without waiting.
start_kafka_node() {
  local n=$1
  running "kafka-$n" && return 0
  log "starting Kafka node $n on 127.0.0.1:$(kafka_node_port "$n")"
  mkdir -p "$LOGS"; touch "$LOGS/kafka-$n.log"; wc -l < "$LOGS/kafka-$n.log" > "$RUN/kafka-$n.log-offset"
  start_bg "kafka-$n" "${KAFKA_NODE_JAVA[@]}" kafka.Kafka "$KAFKA_CLUSTER_DIR/$n/server.properties"
}
stop_kafka_node() { stop_bg "kafka-$1"; }
# SIGKILL to node N's whole session, as a crash would; returns once the process is gone (or a
# zombie), so a start right after never finds its ports or data directory still held.
kill_kafka_node() {
  local pidfile=$RUN/kafka-$1.pid pid
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" = Z ] && break
    sleep 0.1
  done
  rm -f "$pidfile"
}
# Ready once it serves clients: a broker logs "Kafka Server started" (since this start) only
# after the controller unfenced it. awk reads the whole log: `tail | grep -q` fails under
# pipefail once the log is long (grep exits at the match, tail gets SIGPIPE).
kafka_node_ready() {
  local n=$1
  running "kafka-$n" && port_open "$(kafka_node_port "$n")" &&
    awk -v from="$(( $(cat "$RUN/kafka-$n.log-offset") + 1 ))" \
      'NR >= from && /Kafka Server started/ { found = 1 } END { exit !found }' "$LOGS/kafka-$n.log"
}
kafka_cluster_ready() {
  local n
  for n in "${KAFKA_NODES[@]}"; do kafka_node_ready "$n" || return 1; done
}

# Formats (once) and starts every node that is not running, without waiting.
start_kafka_cluster() {
  format_kafka_cluster
  local n
  for n in "${KAFKA_NODES[@]}"; do start_kafka_node "$n"; done
}
# Only before its state is removed (env-down, FERRY_KAFKA_CLUSTER=0), so SIGKILL: a graceful
# stop of the last node waits ~20 s for a controller quorum that left with the others.
remove_kafka_cluster() {
  local n
  for n in "${KAFKA_NODES[@]}"; do kill_kafka_node "$n"; done
  rm -rf "$KAFKA_CLUSTER_DIR"
}

# up.sh's hooks. Before the waits: start (FERRY_KAFKA_CLUSTER=1, or already enabled) or remove
# (FERRY_KAFKA_CLUSTER=0) the cluster.
kafka_cluster_up() {
  case ${FERRY_KAFKA_CLUSTER:-} in
    1) start_kafka_cluster ;;
    0) remove_kafka_cluster ;;
    *) if kafka_cluster_enabled; then start_kafka_cluster; fi ;;
  esac
}
# After the other waits: wait for the cluster.
kafka_cluster_wait() {
  kafka_cluster_enabled || return 0
  wait_for "Kafka cluster" 180 kafka_cluster_ready
}
# Its lines for .ferry/env (none without the cluster).
kafka_cluster_env() {
  kafka_cluster_enabled || return 0
  cat <<ENV
# The three-broker cluster (node N is ctl.sh's kafka-N), same users as the single broker.
export FERRY_KAFKA_CLUSTER_BOOTSTRAP='$(kafka_cluster_bootstrap)'
ENV
}

# ctl.sh's hook: ACTION kafka-N.
kafka_node_ctl() {
  local action=$1 n=$2
  [[ " ${KAFKA_NODES[*]} " == *" $n "* ]] || die "no Kafka node $n (nodes: ${KAFKA_NODES[*]})"
  kafka_cluster_enabled || die "this environment has no Kafka cluster: FERRY_KAFKA_CLUSTER=1 make env-up"
  case $action in
    start) start_kafka_node "$n"; wait_for "Kafka node $n" 120 kafka_node_ready "$n" ;;
    stop) stop_kafka_node "$n" ;;
    kill) kill_kafka_node "$n" ;;
    restart) stop_kafka_node "$n"; start_kafka_node "$n"; wait_for "Kafka node $n" 120 kafka_node_ready "$n" ;;
    pause|resume)
      [ -f "$RUN/kafka-$n.pid" ] || die "kafka-$n is not running"
      local signal=STOP; [ "$action" = resume ] && signal=CONT
      kill "-$signal" -- "-$(cat "$RUN/kafka-$n.pid")" ;;
    *) die "unknown action $action" ;;
  esac
}
