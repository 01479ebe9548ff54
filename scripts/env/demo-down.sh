#!/usr/bin/env bash
# `make demo-down`: removes what `make demo` installed: the shop (examples/shop-local, its
# topics and consumers while the operator still runs, so their finalizers complete), then the
# Ferry release and its namespace. The services' databases on the host's PostgreSQL stay until
# `make env-down`.
. "$(dirname "$0")/lib.sh"
# shellcheck disable=SC1091
. "$FERRY_DIR/env"
OVERLAY=$REPO/examples/shop-local
for s in user-service order-service notification-service; do
  [ -f "$OVERLAY/$s-db.env" ] || echo "DATABASE_URL=postgresql://unused@127.0.0.1/unused" > "$OVERLAY/$s-db.env"
done
log "removing the shop (namespace shop)"
kubectl delete -k "$OVERLAY" --ignore-not-found --wait=true --timeout=180s >/dev/null || true
kubectl delete namespace shop --ignore-not-found --wait=true --timeout=120s >/dev/null || true
log "removing the Ferry release (namespace ferry-system)"
helm uninstall ferry -n ferry-system --wait --timeout 120s >/dev/null 2>&1 || true
kubectl delete namespace ferry-system --ignore-not-found --wait=true --timeout=120s >/dev/null || true
log "demo removed"
