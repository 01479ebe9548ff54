#!/usr/bin/env bash
# `make demo`: the shop (examples/shop) on Ferry, on the local environment's real node, driven
# end to end through the services' HTTP APIs, with every check printed. Bash, not Rust: every
# step is a kubectl/helm/psql/curl call, and the one check that needs Kafka is `kubectl ferry`.
# Exits 0 only when every check holds. `make demo-down` (scripts/env/demo-down.sh) removes it.
#
# Runs after `make env-up` (with the node), `make images` and `make shop-images` (the Makefile
# does them first). Steps: (1) the Ferry chart into ferry-system, the operator as a pod on
# ferry-node; (2) the services' databases on the host's PostgreSQL and the shop's overlay
# (examples/shop-local); (3) everything Ready; (4) users, orders, an order for an unknown user, a
# re-delivered event and a poison event, through the APIs (and the order-service's outbox for the
# last two); (5) the checks.
. "$(dirname "$0")/lib.sh"
. "$ENV_SCRIPTS/node.sh"
set -o pipefail
# shellcheck disable=SC1091
. "$FERRY_DIR/env"
node_enabled && [ "$(node_owner)" = "$FERRY_DIR" ] || die "make demo needs this environment's real node: make env-down, then make demo (FERRY_NODE unset)"

RELEASE=ferry
OPERATOR_NS=ferry-system
SHOP_NS=shop
OVERLAY=$REPO/examples/shop-local
version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$REPO/Cargo.toml")
target=${CARGO_TARGET_DIR:-$REPO/target}
KUBECTL_FERRY=$target/debug/kubectl-ferry
# Generous: the node is a 2-core machine shared with everything else.
READY_TIMEOUT=${FERRY_DEMO_TIMEOUT:-300}
started=$(date +%s)
failures=0

step() { printf '\n\033[1m== %s\033[0m (%ss)\n' "$*" "$(($(date +%s) - started))"; }
ok() { printf '  \033[32mok\033[0m   %s\n' "$*"; }
bad() { printf '  \033[31mFAIL\033[0m %s\n' "$*"; failures=$((failures + 1)); }
info() { printf '       %s\n' "$*"; }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }
# until_true SECONDS WHAT CMD...: polls CMD every 2 s until it succeeds; a progress line every 20 s.
until_true() {
  local deadline=$(($(date +%s) + $1)) what=$2 n=0; shift 2
  until "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ]; then return 1; fi
    n=$((n + 1)); [ $((n % 10)) -eq 0 ] && info "... waiting for $what ($(($(date +%s) - started))s)"
    sleep 2
  done
}
# db NAME SQL: runs SQL in the service database NAME on the host's PostgreSQL (superuser, loopback).
db() { psql -X -q -t -A -v ON_ERROR_STOP=1 "${FERRY_DATABASE_URL%/*}/$1" -c "$2"; }

# --- 1. Ferry -------------------------------------------------------------------------------
step "Ferry $version: the chart into $OPERATOR_NS, the operator on $FERRY_NODE_NAME"
claim='{"metadata":{"annotations":{"scheduler.alpha.kubernetes.io/node-selector":"kubernetes.io/hostname='"$FERRY_NODE_NAME"'","scheduler.alpha.kubernetes.io/defaultTolerations":"[{\"key\":\"'"$FERRY_NODE_TAINT"'\",\"operator\":\"Exists\",\"effect\":\"NoSchedule\"}]"}}}'
kubectl create namespace "$OPERATOR_NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl patch namespace "$OPERATOR_NS" --type=merge -p "$claim" >/dev/null
kubectl -n "$OPERATOR_NS" create secret generic kafka-admin --from-literal=username="$FERRY_KAFKA_USERNAME" \
  --from-literal=password="$FERRY_KAFKA_PASSWORD" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
helm upgrade --install "$RELEASE" "$REPO/charts/ferry" -n "$OPERATOR_NS" --wait --timeout "${READY_TIMEOUT}s" \
  --set replicas=1 --set log.format=text \
  --set kafka.bootstrap="$FERRY_NODE_KAFKA_BOOTSTRAP" --set kafka.clientBootstrap="$FERRY_NODE_KAFKA_BOOTSTRAP" >/dev/null \
  || { kubectl -n "$OPERATOR_NS" get pods -o wide; kubectl -n "$OPERATOR_NS" logs deploy/"$RELEASE"-operator --tail=30 || true; die "helm install failed"; }
kubectl -n "$OPERATOR_NS" get pods -o wide
webhook_config=$RELEASE-$OPERATOR_NS
until_true "$READY_TIMEOUT" "the operator to register its webhook" \
  bash -c "kubectl get mutatingwebhookconfiguration $webhook_config -o jsonpath='{.webhooks[0].clientConfig.caBundle}' | grep -q ."
ok "operator Ready on $FERRY_NODE_NAME, webhook $webhook_config registered (served through Service $RELEASE-webhook)"
