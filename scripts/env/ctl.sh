#!/usr/bin/env bash
# ctl.sh start|stop|restart SERVICE — one service of a running environment, for tests that
# restart a broker or database under load. `kill` sends SIGKILL, as a crash would.
. "$(dirname "$0")/lib.sh"
. "$ENV_SCRIPTS/services.sh"
action=${1:?usage: ctl.sh start|stop|restart|kill SERVICE}; service=${2:?service: ${SERVICES[*]}}
[[ " ${SERVICES[*]} " == *" $service "* ]] || die "unknown service $service (one of: ${SERVICES[*]})"
ready() { case $service in postgres|kafka|etcd|apiserver) "${service}_ready" ;; *) running "$service" ;; esac; }
case $action in
  start) "start_$service"; wait_for "$service" 120 ready ;;
  stop) "stop_$service" ;;
  kill) [ -f "$RUN/$service.pid" ] && kill -KILL -- "-$(cat "$RUN/$service.pid")" 2>/dev/null; rm -f "$RUN/$service.pid" ;;
  restart) "stop_$service"; "start_$service"; wait_for "$service" 120 ready ;;
  *) die "unknown action $action" ;;
esac
