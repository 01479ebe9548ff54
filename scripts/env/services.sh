# start_<service> / stop_<service> for every service of the local environment. Sourced, not run.
# Each start is a no-op when the service already runs, so `make env-up` is idempotent.
# shellcheck shell=bash

SERVICES=(postgres kafka etcd apiserver controller-manager scheduler kwok)
# The real node; it adds listen addresses for pods to PostgreSQL and Kafka.
. "$ENV_SCRIPTS/node.sh"

# --- Another environment on this environment's ports ------------------------------------------
# Another checkout's services on the same ports would answer this environment's readiness checks
# with their own passwords and certificates, and its tests would fail far from the cause. Refuse
# at the start instead, naming the process. (The real node has its own owner check: node_claim.)
service_ports() {
  case $1 in
    postgres) echo "$PG_PORT" ;;
    kafka) echo "$KAFKA_PORT $KAFKA_CONTROLLER_PORT" ;;
    etcd) echo "$ETCD_PORT $ETCD_PEER_PORT" ;;
    apiserver) echo "$API_PORT" ;;
  esac
}
# postgres_ours: $PG_DIR was made by this environment (see start_postgres).
postgres_ours() { [ "$(cat "$PG_DIR/owner" 2>/dev/null)" = "$FERRY_DIR" ]; }
refuse_foreign_listeners() {
  local svc p ours
  for svc in "${SERVICES[@]}"; do
    for p in $(service_ports "$svc"); do
      port_listened "$p" || continue
      if [ "$svc" = postgres ]; then
        postgres_ours && ours=1 || ours=
      else
        running "$svc" && ours=1 || ours=
      fi
      [ -n "$ours" ] || die "port $p ($svc) is taken by $(ss -Hltnp "sport = :$p" | grep -o 'users:.*' | head -1), which is not this environment's ($FERRY_DIR): if it is another checkout's Ferry environment, run \`make env-down\` there (same FERRY_PORT_OFFSET), or give this one other ports: FERRY_PORT_OFFSET=100 make env-up"
    done
  done
}

# --- PostgreSQL (Debian's) -------------------------------------------------------------------
start_postgres() {
  local bin; bin=$(pg_bin)
  # $PG_DIR is keyed by port, not by checkout: a database another checkout left behind has a
  # password this environment does not know. Running, it is refused (refuse_foreign_listeners);
  # stopped, it is thrown away like any of this environment's state.
  if [ -d "$PG_DIR" ] && ! postgres_ours; then
    as_postgres "$bin/pg_ctl" -D "$PG_DIR/data" status >/dev/null 2>&1 &&
      die "PostgreSQL in $PG_DIR belongs to $(cat "$PG_DIR/owner" 2>/dev/null || echo 'another environment'): run \`make env-down\` there, or FERRY_PORT_OFFSET=100 make env-up"
    rm -rf "$PG_DIR"
  fi
  if as_postgres "$bin/pg_ctl" -D "$PG_DIR/data" status >/dev/null 2>&1; then return 0; fi
  if [ ! -f "$PG_DIR/data/PG_VERSION" ]; then
    rm -rf "$PG_DIR"; mkdir -p "$PG_DIR" "$STATE"
    # TCP on loopback asks for the password (SCRAM), as a real database does: the DSNs the
    # tests hand Ferry's binaries carry it, and `make test`'s log audit looks for it.
    openssl rand -hex 16 > "$STATE/postgres-password"
    cp "$STATE/postgres-password" "$PG_DIR/pwfile"
    [ "$(id -u)" = 0 ] && chown -R postgres:postgres "$PG_DIR"
    as_postgres "$bin/initdb" -D "$PG_DIR/data" -U postgres --auth-local=trust \
      --auth-host=scram-sha-256 --pwfile="$PG_DIR/pwfile" -E UTF8 >>"$LOGS/postgres.log" 2>&1
    rm -f "$PG_DIR/pwfile"
    node_pg_hba "$PG_DIR/data/pg_hba.conf"
    echo "$FERRY_DIR" > "$PG_DIR/owner"
  fi
  # A database made before the password (initdb --auth=trust) does not check it; give it one
  # anyway, so the DSNs carry a password either way.
  [ -f "$STATE/postgres-password" ] || openssl rand -hex 16 > "$STATE/postgres-password"
  log "starting PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$PG_PORT"
  # Durability settings are off: this database is thrown away, and tests want speed.
  as_postgres "$bin/pg_ctl" -D "$PG_DIR/data" -w -t 60 start \
    -o "-c listen_addresses=127.0.0.1$(node_pg_listen) -p $PG_PORT -k $PG_DIR -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" \
    >>"$LOGS/postgres.log" 2>&1 || die "PostgreSQL did not start; see $LOGS/postgres.log"
}
stop_postgres() {
  local bin; bin=$(pg_bin)
  [ -n "$bin" ] && [ -d "$PG_DIR/data" ] && postgres_ours || return 0
  as_postgres "$bin/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null 2>&1 || true
}
postgres_ready() { "$(pg_bin)/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; }

# --- Kafka (KRaft, SASL/SCRAM, StandardAuthorizer) -------------------------------------------
KAFKA_JAVA=(java -Xms256m -Xmx768m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true
  "-Dlog4j2.configurationFile=$ENV_SCRIPTS/kafka/log4j2.properties" -cp "$KAFKA_LIBS/*")
start_kafka() {
  running kafka && return 0
  local dir=$STATE/kafka
  if [ ! -f "$dir/meta.properties.done" ]; then
    rm -rf "$dir"; mkdir -p "$dir/data"
    local admin_pw noacl_pw
    admin_pw=$(openssl rand -hex 16); noacl_pw=$(openssl rand -hex 16)
    echo "$admin_pw" > "$dir/admin-password"; echo "$noacl_pw" > "$dir/noacl-password"
    sed -e "s#@PORT@#$KAFKA_PORT#g" -e "s#@CONTROLLER_PORT@#$KAFKA_CONTROLLER_PORT#g" \
      -e "s#@DATA@#$dir/data#g" -e "s#@ADMIN_PASSWORD@#$admin_pw#g" \
      "$ENV_SCRIPTS/kafka/server.properties.in" > "$dir/server.properties"
    node_kafka_listener "$dir/server.properties"
    # StorageTool lives in kafka_2.13 (kafka.tools) up to now; guard against a move.
    local tool=kafka.tools.StorageTool
    grep -aq "kafka/tools/StorageTool.class" "$KAFKA_LIBS"/kafka_2.13-*.jar \
      || tool=org.apache.kafka.tools.StorageTool
    local cluster_id; cluster_id=$("${KAFKA_JAVA[@]}" "$tool" random-uuid 2>>"$LOGS/kafka.log")
    # The admin, and a user with no ACLs at all that tests use to see the authorizer refuse.
    "${KAFKA_JAVA[@]}" "$tool" format --standalone -t "$cluster_id" -c "$dir/server.properties" \
      --add-scram "SCRAM-SHA-512=[name=admin,password=$admin_pw]" \
      --add-scram "SCRAM-SHA-512=[name=ferry-noacl,password=$noacl_pw]" >>"$LOGS/kafka.log" 2>&1 \
      || die "formatting Kafka storage failed; see $LOGS/kafka.log"
    touch "$dir/meta.properties.done"
  fi
  log "starting Kafka $KAFKA_VERSION on 127.0.0.1:$KAFKA_PORT (SASL_PLAINTEXT, SCRAM-SHA-512, ACLs on)"
  # Readiness is judged only by what this start logs.
  mkdir -p "$LOGS"; touch "$LOGS/kafka.log"; wc -l < "$LOGS/kafka.log" > "$RUN/kafka.log-offset"
  start_bg kafka "${KAFKA_JAVA[@]}" kafka.Kafka "$dir/server.properties"
}
stop_kafka() { stop_bg kafka; }
# awk reads the whole log: `tail | grep -q` fails under pipefail once the log is long (grep exits
# at the match and tail dies of SIGPIPE), which made a restart's readiness wait time out.
kafka_ready() {
  running kafka && port_open "$KAFKA_PORT" &&
    awk -v from="$(( $(cat "$RUN/kafka.log-offset") + 1 ))" \
      'NR >= from && /Kafka Server started/ { found = 1 } END { exit !found }' "$LOGS/kafka.log"
}

# --- Kubernetes control plane (envtest-style) ------------------------------------------------
make_pki() {
  local d=$STATE/pki
  [ -f "$d/kubeconfig" ] && return 0
  mkdir -p "$d"
  ( cd "$d"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=ferry-local-ca" \
      -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
      -keyout ca.key -out ca.crt 2>/dev/null
    leaf() {
      openssl req -new -newkey rsa:2048 -nodes -subj "$2" -keyout "$1.key" -out "$1.csr" 2>/dev/null
      printf '%b' "$3" > "$1.ext"
      openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
        -extfile "$1.ext" -out "$1.crt" 2>/dev/null
    }
    leaf apiserver "/CN=kube-apiserver" "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost,IP:10.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc\n"
    leaf admin "/O=system:masters/CN=ferry-admin" "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n"
    openssl genrsa -out sa.key 2048 2>/dev/null && openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    b64() { base64 -w0 < "$1"; }
    cat > kubeconfig.tmp <<KC
apiVersion: v1
kind: Config
clusters: [{name: ferry-local, cluster: {server: "https://127.0.0.1:$API_PORT", certificate-authority-data: $(b64 ca.crt)}}]
users: [{name: ferry-admin, user: {client-certificate-data: $(b64 admin.crt), client-key-data: $(b64 admin.key)}}]
contexts: [{name: ferry-local, context: {cluster: ferry-local, user: ferry-admin}}]
current-context: ferry-local
KC
    mv kubeconfig.tmp kubeconfig )
}
KUBECONFIG_FILE() { echo "$STATE/pki/kubeconfig"; }

start_etcd() {
  running etcd && return 0
  mkdir -p "$STATE/etcd"
  log "starting etcd $ETCD_VERSION on 127.0.0.1:$ETCD_PORT"
  start_bg etcd "$K8S_BIN/etcd" --name=ferry --data-dir="$STATE/etcd" --unsafe-no-fsync \
    --listen-client-urls="http://127.0.0.1:$ETCD_PORT" --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster="ferry=http://127.0.0.1:$ETCD_PEER_PORT" --listen-metrics-urls="" --log-level=warn
}
stop_etcd() { stop_bg etcd; }
etcd_ready() { curl -fsS "http://127.0.0.1:$ETCD_PORT/health"; }

start_apiserver() {
  running apiserver && return 0
  local d=$STATE/pki
  log "starting kube-apiserver $K8S_VERSION on https://127.0.0.1:$API_PORT"
  # PodNodeSelector + PodTolerationRestriction: a namespace annotated
  # scheduler.alpha.kubernetes.io/node-selector and .../defaultTolerations puts every pod it
  # holds on the real node, including the worker pods the operator's Deployments create
  # (operator/tests/real_node_e2e.rs); namespaces without the annotations are untouched
  # (PodTolerationRestriction only adds the memory-pressure toleration to non-BestEffort pods,
  # as the DaemonSet controller does).
  start_bg apiserver "$K8S_BIN/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --bind-address=127.0.0.1 --secure-port="$API_PORT" \
    --advertise-address=127.0.0.1 --endpoint-reconciler-type=none \
    --cert-dir="$d" --tls-cert-file="$d/apiserver.crt" --tls-private-key-file="$d/apiserver.key" \
    --client-ca-file="$d/ca.crt" \
    --service-account-issuer="https://127.0.0.1:$API_PORT/" \
    --service-account-key-file="$d/sa.pub" --service-account-signing-key-file="$d/sa.key" \
    --service-cluster-ip-range=10.0.0.0/24 \
    --authorization-mode=Node,RBAC --allow-privileged=true --profiling=false \
    --enable-admission-plugins=NodeRestriction,PodNodeSelector,PodTolerationRestriction \
    --kubelet-preferred-address-types=InternalIP --kubelet-certificate-authority="$d/ca.crt" \
    --kubelet-client-certificate="$d/apiserver-kubelet-client.crt" --kubelet-client-key="$d/apiserver-kubelet-client.key"
}
stop_apiserver() { stop_bg apiserver; }
apiserver_ready() {
  local d=$STATE/pki
  curl -fsS --cacert "$d/ca.crt" --cert "$d/admin.crt" --key "$d/admin.key" "https://127.0.0.1:$API_PORT/readyz"
}

start_controller-manager() {
  running controller-manager && return 0
  local d=$STATE/pki
  log "starting kube-controller-manager"
  # --kube-api-qps/burst: the defaults (20/30) made 1,000 one-replica Deployments take four
  # minutes to become available with the API server at 6% CPU (`make bench-operator`); managed
  # clusters run their controller-manager with a higher client rate for the same reason.
  start_bg controller-manager "$K8S_BIN/kube-controller-manager" --kubeconfig="$d/kubeconfig" \
    --authentication-kubeconfig="$d/kubeconfig" --authorization-kubeconfig="$d/kubeconfig" \
    --bind-address=127.0.0.1 --secure-port=0 --leader-elect=false \
    --kube-api-qps=100 --kube-api-burst=200 \
    --service-account-private-key-file="$d/sa.key" --root-ca-file="$d/ca.crt" \
    --use-service-account-credentials=false --profiling=false
}
stop_controller-manager() { stop_bg controller-manager; }

start_scheduler() {
  running scheduler && return 0
  local d=$STATE/pki
  log "starting kube-scheduler"
  start_bg scheduler "$K8S_BIN/kube-scheduler" --kubeconfig="$d/kubeconfig" \
    --authentication-kubeconfig="$d/kubeconfig" --authorization-kubeconfig="$d/kubeconfig" \
    --bind-address=127.0.0.1 --secure-port=0 --leader-elect=false --profiling=false
}
stop_scheduler() { stop_bg scheduler; }

# KWOK plays kubelet for nodes annotated kwok.x-k8s.io/node=fake: it keeps them Ready and moves
# their pods to Running/Ready, so Deployments report ready replicas without a container runtime.
start_kwok() {
  running kwok && return 0
  local d=$STATE/pki
  log "starting KWOK $KWOK_VERSION"
  start_bg kwok "$TOOLS_BIN/kwok" --kubeconfig="$d/kubeconfig" --config="$TOOLS_BIN/kwok-stages.yaml" \
    --manage-all-nodes=false --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --node-ip=127.0.0.1 --node-lease-duration-seconds=40 --server-address=127.0.0.1:0
}
stop_kwok() { stop_bg kwok; }

ensure_nodes() {
  local n
  for n in 1 2; do
    "$K8S_BIN/kubectl" --kubeconfig="$(KUBECONFIG_FILE)" apply --server-side --field-manager=ferry-env -f - >/dev/null <<NODE
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$n
  annotations: {kwok.x-k8s.io/node: fake, node.alpha.kubernetes.io/ttl: "0"}
  labels: {type: kwok, kubernetes.io/hostname: kwok-node-$n, kubernetes.io/os: linux, kubernetes.io/arch: amd64}
status:
  allocatable: {cpu: "32", memory: 256Gi, pods: "110"}
  capacity: {cpu: "32", memory: 256Gi, pods: "110"}
NODE
  done
}
nodes_ready() {
  "$K8S_BIN/kubectl" --kubeconfig="$(KUBECONFIG_FILE)" wait --for=condition=Ready node/kwok-node-1 node/kwok-node-2 --timeout=2s
}
