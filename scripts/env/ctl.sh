#!/usr/bin/env bash
# ctl.sh start|stop|restart SERVICE — one service of a running environment, for tests that
# restart a broker or database under load. `kill` sends SIGKILL, as a crash would; `pause` and
# `resume` freeze and thaw it (SIGSTOP/SIGCONT: connections stay open, nothing answers).
. "$(dirname "$0")/lib.sh"
. "$ENV_SCRIPTS/services.sh"
. "$ENV_SCRIPTS/kafka-cluster.sh"
action=${1:?usage: ctl.sh start|stop|restart|kill|pause|resume SERVICE}; service=${2:?service: ${SERVICES[*]}}
if [[ $service == kafka-[0-9]* ]]; then kafka_node_ctl "$action" "${service#kafka-}"; exit; fi
[[ " ${SERVICES[*]} " == *" $service "* ]] || die "unknown service $service (one of: ${SERVICES[*]})"
ready() { case $service in postgres|kafka|etcd|apiserver) "${service}_ready" ;; *) running "$service" ;; esac; }
case $action in
  start) "start_$service"; wait_for "$service" 120 ready ;;
  stop) "stop_$service" ;;
  kill)
    if [ "$service" = postgres ]; then
      as_postgres "$(pg_bin)/pg_ctl" -D "$PG_DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
    elif [ -f "$RUN/$service.pid" ]; then
      kill -KILL -- "-$(cat "$RUN/$service.pid")" 2>/dev/null || true
      rm -f "$RUN/$service.pid"
    fi ;;
  restart) "stop_$service"; "start_$service"; wait_for "$service" 120 ready ;;
  pause|resume)
    [ -f "$RUN/$service.pid" ] || die "$service has no pid file (not running, or not pausable)"
    signal=STOP; [ "$action" = resume ] && signal=CONT
    kill "-$signal" -- "-$(cat "$RUN/$service.pid")" ;;
  *) die "unknown action $action" ;;
esac
