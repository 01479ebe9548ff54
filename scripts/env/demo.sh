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
# `kubectl ferry` reads the dead-letter topic for the checks (--direct: from here, with the
# consumer's credential, so the check does not depend on a replay Job running on the node).
# FERRY_IMAGE_BUILD=no (CI, after `make test` built everything): use what target/ holds, as
# images.sh does.
if [ "${FERRY_IMAGE_BUILD:-yes}" != no ]; then
  (cd "$REPO" && cargo build --quiet --locked -p kubectl-ferry --bin kubectl-ferry)
fi
[ -x "$KUBECTL_FERRY" ] || die "$KUBECTL_FERRY is missing: cargo build -p kubectl-ferry"
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
  --set replicas=1 \
  --set kafka.bootstrap="$FERRY_NODE_KAFKA_BOOTSTRAP" --set kafka.clientBootstrap="$FERRY_NODE_KAFKA_BOOTSTRAP" >/dev/null \
  || { kubectl -n "$OPERATOR_NS" get pods -o wide; kubectl -n "$OPERATOR_NS" logs deploy/"$RELEASE"-operator --tail=30 || true; die "helm install failed"; }
kubectl -n "$OPERATOR_NS" get pods -o wide
webhook_config=$RELEASE-$OPERATOR_NS
until_true "$READY_TIMEOUT" "the operator to register its webhook" \
  bash -c "kubectl get mutatingwebhookconfiguration $webhook_config -o jsonpath='{.webhooks[0].clientConfig.caBundle}' | grep -q ."
ok "operator Ready on $FERRY_NODE_NAME, webhook $webhook_config registered (served through Service $RELEASE-webhook)"

# --- 2. the shop ----------------------------------------------------------------------------
step "the shop: a database per service on the host's PostgreSQL, examples/shop-local applied"
pg_host=${FERRY_NODE_DATABASE_URL#*@}; pg_host=${pg_host%%/*}
for service in user-service order-service notification-service; do
  name=${service//-/_}
  if [ -z "$(db postgres "SELECT 1 FROM pg_roles WHERE rolname = '$name'")" ]; then
    db postgres "CREATE ROLE $name LOGIN"
  fi
  if [ -z "$(db postgres "SELECT 1 FROM pg_database WHERE datname = '$name'")" ]; then
    db postgres "CREATE DATABASE $name OWNER $name"
  fi
  # The pods' network is trusted by the host's PostgreSQL (node.sh): the role needs no password.
  echo "DATABASE_URL=postgresql://$name@$pg_host/$name" > "$OVERLAY/$service-db.env"
  info "$service: database $name at $pg_host"
done
kubectl apply -k "$OVERLAY" | sed 's/^/       /'

# --- 3. Ready ---------------------------------------------------------------------------------
step "waiting for the shop to be Ready"
ready() { [ "$(kubectl -n "$SHOP_NS" get "$1" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]; }
for r in eventtopic/users-v1 eventtopic/orders-v1 eventtopic/dlq-v1; do
  until_true "$READY_TIMEOUT" "$r" ready "$r" || { kubectl -n "$SHOP_NS" get "$r" -o yaml | tail -20; die "$r is not Ready"; }
  ok "$r Ready"
done
for d in user-service order-service notification-service; do
  kubectl -n "$SHOP_NS" rollout status "deployment/$d" --timeout="${READY_TIMEOUT}s" >/dev/null \
    || { kubectl -n "$SHOP_NS" get pods -o wide; kubectl -n "$SHOP_NS" describe deploy "$d" | tail -15; die "deployment $d is not Ready"; }
  ok "deployment/$d Ready on $FERRY_NODE_NAME (containers: $(kubectl -n "$SHOP_NS" get pods -l app="$d" --field-selector=status.phase=Running -o jsonpath='{.items[0].spec.initContainers[*].name} {.items[0].spec.containers[*].name}'))"
done
# order-service's pods started with the rest of the overlay, before the webhook knew the
# Sidecar-placed consumer that selects them: Ferry says PodsToRestart, and a restart (what a user
# does) gets them their worker.
reconciling() { kubectl -n "$SHOP_NS" get "$1" -o jsonpath='{.status.conditions[?(@.type=="Reconciling")].reason}'; }
restart_when_asked() { ready "$1" && return 0; [ "$(reconciling "$1")" = PodsToRestart ] || return 1
  info "$1: PodsToRestart (its pods predate it): kubectl rollout restart deployment/$2"
  kubectl -n "$SHOP_NS" rollout restart "deployment/$2" >/dev/null
  kubectl -n "$SHOP_NS" rollout status "deployment/$2" --timeout="${READY_TIMEOUT}s" >/dev/null; }
until_true "$READY_TIMEOUT" "eventconsumer/order-service-users to see order-service's pods" \
  restart_when_asked eventconsumer/order-service-users order-service
for c in eventconsumer/notification-service-orders eventconsumer/order-service-users; do
  until_true "$READY_TIMEOUT" "$c" ready "$c" || { kubectl -n "$SHOP_NS" get "$c" -o yaml | tail -30; die "$c is not Ready"; }
  ok "$c Ready"
done
kubectl -n "$SHOP_NS" get pods -o wide | sed 's/^/       /'

# --- 4. drive it --------------------------------------------------------------------------------
step "driving the shop through its HTTP APIs (kubectl port-forward)"
pf_pids=()
cleanup() { local p; for p in "${pf_pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
declare -A port
for service in user-service order-service notification-service; do
  port[$service]=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  kubectl -n "$SHOP_NS" port-forward "svc/$service" "${port[$service]}:8000" >/dev/null 2>&1 &
  pf_pids+=($!)
done
api() { local service=$1 path=$2; shift 2; curl -sS -m 10 "http://127.0.0.1:${port[$service]}$path" "$@"; }
for service in user-service order-service notification-service; do
  until_true 60 "port-forward to $service" api "$service" /healthz -f || die "no port-forward to $service"
done
run=$(date +%s)
declare -a user_ids
for who in ada grace linus; do
  out=$(api user-service /users -H 'content-type: application/json' -d "{\"email\":\"$who-$run@shop.example\",\"name\":\"$who\"}")
  id=$(jq -r .id <<<"$out"); [ "$id" != null ] || die "POST /users: $out"
  user_ids+=("$id"); info "POST user-service /users $who -> 201 $id"
done
projected() { local n=0 u; for u in "${user_ids[@]}"; do api order-service /users | grep -q "$u" && n=$((n + 1)); done; [ "$n" = "${#user_ids[@]}" ]; }
until_true 120 "order-service's projection to know the 3 users (users.v1 -> sidecar worker)" projected
check "order-service learnt the 3 new users from users.v1 (Sidecar-placed worker, localhost delivery)" projected
declare -a order_ids
for i in 0 1 2; do
  out=$(api order-service /orders -H 'content-type: application/json' -d "{\"user_id\":\"${user_ids[$i]}\",\"amount\":\"$((i + 1))9.90\"}")
  id=$(jq -r .id <<<"$out"); [ "$id" != null ] || die "POST /orders: $out"
  order_ids+=("$id"); info "POST order-service /orders user ${user_ids[$i]:0:8}… -> 201 $id"
done
unknown=$(python3 -c 'import uuid; print(uuid.uuid4())')
code=$(api order-service /orders -o /dev/null -w '%{http_code}' -H 'content-type: application/json' -d "{\"user_id\":\"$unknown\",\"amount\":\"5.00\"}")
check "an order for an unknown user ($unknown) is refused: HTTP $code (422 expected), no event" [ "$code" = 422 ]

# A re-delivery and a poison event, through the order-service's outbox (what the service would
# write; the relay publishes both): the first order's row again, same event id; and an
# order.created whose data the notification-service cannot read.
first_event=$(db order_service "SELECT payload->>'id' FROM outbox WHERE payload->'data'->>'order_id' = '${order_ids[0]}'")
[ -n "$first_event" ] || die "no outbox row for order ${order_ids[0]}"
db order_service "INSERT INTO outbox (topic, key, payload, headers, created_at) SELECT topic, key, payload, headers, now() FROM outbox WHERE payload->>'id' = '$first_event'"
info "outbox: order ${order_ids[0]:0:8}…'s event $first_event written again (a re-delivery)"
poison=$(python3 -c 'import uuid; print(uuid.uuid4())')
db order_service "INSERT INTO outbox (topic, key, payload, headers, created_at) SELECT topic, key, jsonb_set(jsonb_set(payload, '{id}', '\"$poison\"'), '{data}', '{\"order_id\": \"not-a-uuid\"}'), headers, now() FROM outbox WHERE payload->>'id' = '$first_event' LIMIT 1"
info "outbox: poison order.created $poison (order_id \"not-a-uuid\", no user_id/amount)"

# --- 5. checks ------------------------------------------------------------------------------------
step "what happened"
published() { [ "$(db "$1" "SELECT count(*) FROM outbox WHERE published_at IS NULL")" = 0 ]; }
until_true 120 "the relays to publish every outbox row" bash -c "$(declare -f db); published() { [ \"\$(db \"\$1\" \"SELECT count(*) FROM outbox WHERE published_at IS NULL\")\" = 0 ]; }; FERRY_DATABASE_URL='$FERRY_DATABASE_URL'; published user_service && published order_service"
for d in user_service order_service; do
  db "$d" "SELECT topic, count(*), count(DISTINCT payload->>'id') FROM outbox WHERE created_at >= to_timestamp($run) GROUP BY topic ORDER BY topic" | while IFS='|' read -r t n ids; do
    info "$t: $n events published by ${d/_/-}'s relay this run ($ids distinct event ids)"
  done
done
check "users.v1 and orders.v1 events all published by the injected relays" published order_service
lag() { kubectl -n "$SHOP_NS" get "eventconsumer/$1" -o jsonpath='{.status.lag.total}'; }
lag_zero() { [ "$(lag notification-service-orders)" = 0 ] && [ "$(lag order-service-users)" = 0 ]; }
emails_for() { api notification-service /notifications | jq --arg o "$1" '[.emails_sent[] | select(.order_id == $o)] | length'; }
all_emailed() { local o; for o in "${order_ids[@]}"; do [ "$(emails_for "$o")" -ge 1 ] || return 1; done; }
until_true 120 "notification-service to send the 3 emails" all_emailed
# The re-delivered event and the poison event share the first order's key (one partition, in
# that order): the poison event dead-lettered means the re-delivery was consumed before it.
dlq_has_poison() { "$KUBECTL_FERRY" -n "$SHOP_NS" dlq list --direct notification-service-orders --id "$poison" -o json 2>/dev/null | jq -e 'length == 1' >/dev/null; }
until_true 180 "the poison event in dlq.v1" dlq_has_poison
until_true 180 "consumer lag back to 0 (the re-delivery and the poison event consumed too)" lag_zero
for o in "${order_ids[@]}"; do
  check "order ${o:0:8}…: exactly one email sent ($(emails_for "$o"))" [ "$(emails_for "$o")" = 1 ]
done
check "event $first_event published twice on orders.v1, emailed once" \
  [ "$(db order_service "SELECT count(*) FROM outbox WHERE payload->>'id' = '$first_event' AND published_at IS NOT NULL")" = 2 ]
info "notification-service /notifications (this run):"
api notification-service /notifications | jq -r --argjson ids "$(printf '%s\n' "${order_ids[@]}" | jq -R . | jq -s .)" \
  '.emails_sent[] | select(.order_id as $o | $ids | index($o)) | "         email sent: order \(.order_id) user \(.user_id) amount \(.amount) (event \(.event_id))"'
check "poison event $poison is in the dead-letter topic dlq.v1" dlq_has_poison
"$KUBECTL_FERRY" -n "$SHOP_NS" dlq list --direct notification-service-orders --id "$poison" 2>&1 | sed 's/^/       /'
check "consumer lag back to 0 (notification-service-orders: $(lag notification-service-orders), order-service-users: $(lag order-service-users))" lag_zero
info "order-service's user projection (GET /users), this run:"
api order-service /users | jq -r --arg r "$run" '.users[] | select(.email | contains($r)) | "         \(.user_id) \(.email) \(.name)"'

# --- look around ----------------------------------------------------------------------------------
step "look around"
cat <<HOW
       . .ferry/env                                  # KUBECONFIG and the local services
       kubectl get eventtopics,eventconsumers -n $SHOP_NS
       $KUBECTL_FERRY status -n $SHOP_NS
       $KUBECTL_FERRY dlq list notification-service-orders -n $SHOP_NS
       kubectl -n $SHOP_NS logs deploy/order-service -c ferry-relay
       kubectl -n $SHOP_NS port-forward svc/notification-service 8000:8000   # then curl localhost:8000/notifications
       make demo-down                                # removes the shop and the release (make env-down: everything)
HOW
if [ "$failures" -gt 0 ]; then
  die "$failures check(s) failed ($(($(date +%s) - started))s)"
fi
log "make demo: every check holds ($(($(date +%s) - started))s)"
