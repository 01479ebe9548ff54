# Shared by the environment scripts: paths, ports, versions and small helpers. Sourced, not run.
# shellcheck shell=bash
set -euo pipefail

ENV_SCRIPTS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$ENV_SCRIPTS/../.." && pwd)
# shellcheck source=versions.sh
. "$ENV_SCRIPTS/versions.sh"

FERRY_CACHE=${FERRY_CACHE:-$HOME/.cache/ferry}
FERRY_DIR=${FERRY_DIR:-$REPO/.ferry}
STATE=$FERRY_DIR/state
LOGS=$FERRY_DIR/logs
RUN=$FERRY_DIR/run

# Ports on 127.0.0.1, away from the usual defaults so a developer's own services don't collide.
# FERRY_PORT_OFFSET shifts them all, so two checkouts can each run an environment of their own.
off=${FERRY_PORT_OFFSET:-0}
PG_PORT=${FERRY_PG_PORT:-$((55432 + off))}
KAFKA_PORT=${FERRY_KAFKA_PORT:-$((19092 + off))}
KAFKA_CONTROLLER_PORT=${FERRY_KAFKA_CONTROLLER_PORT:-$((19093 + off))}
# The optional three-node cluster (kafka-cluster.sh): client ports from here, controllers after.
KAFKA_CLUSTER_PORT=${FERRY_KAFKA_CLUSTER_PORT:-$((19094 + off))}
ETCD_PORT=${FERRY_ETCD_PORT:-$((12379 + off))}
ETCD_PEER_PORT=${FERRY_ETCD_PEER_PORT:-$((12380 + off))}
API_PORT=${FERRY_API_PORT:-$((16443 + off))}
# PostgreSQL refuses to run as root and its data must be reachable by the postgres user, which a
# checkout under /root is not: keep its data in /tmp, one directory per port.
PG_DIR=${FERRY_PG_DIR:-/tmp/ferry-postgres-$PG_PORT}

K8S_BIN=$FERRY_CACHE/k8s/$K8S_VERSION-etcd-$ETCD_VERSION/bin
TOOLS_BIN=$FERRY_CACHE/tools/kwok-$KWOK_VERSION-helm-$HELM_VERSION/bin
PROMTOOL_BIN=$FERRY_CACHE/promtool/$PROMTOOL_VERSION/bin
KAFKA_LIBS=$FERRY_CACHE/kafka/$KAFKA_VERSION/libs

log() { printf '[ferry-env %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# port_listened PORT...: true when a socket on this machine listens on one of the ports (asks the
# kernel, sends nothing).
port_listened() {
  local p
  for p in "$@"; do ss -Hltn "sport = :$p" | grep -q . && return 0; done
  return 1
}

# True when the process in $RUN/<name>.pid is alive.
running() {
  local pidfile=$RUN/$1.pid
  [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

# start_bg NAME CMD...: starts CMD detached in its own session, output to $LOGS/NAME.log.
start_bg() {
  local name=$1; shift
  mkdir -p "$RUN" "$LOGS"
  setsid "$@" >>"$LOGS/$name.log" 2>&1 < /dev/null &
  echo $! > "$RUN/$name.pid"
}

# stop_bg NAME: TERM, wait up to 20 s, then KILL the process and its session.
stop_bg() {
  local name=$1 pidfile=$RUN/$1.pid pid
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 80); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

# wait_for WHAT SECONDS CMD...: polls CMD until it succeeds, or fails naming the log to read.
wait_for() {
  local what=$1 seconds=$2; shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || die "$what not ready after ${seconds}s; see $LOGS/"
    sleep 0.5
  done
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# as_postgres CMD...: PostgreSQL's tools refuse root; as root run them as the postgres user.
as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
