# The real node `ferry-node`: containerd (Debian's) + runc + a CNI bridge + a kubelet built from
# the Go module proxy, beside the KWOK nodes, so pods really run. Sourced (after lib.sh), not run.
#
# One node per machine: the kubelet's ports (10250, 10248) and some of its paths are fixed, so the
# node's state lives at machine-wide paths ($NODE_ROOT, $NODE_RUN) and $NODE_RUN/owner names the
# environment ($FERRY_DIR) that runs it. Another environment's `make env-up` refuses while that
# owner lives (FERRY_NODE=off starts an environment without the node); an owner whose checkout is
# gone, or whose node processes died, is cleaned up and replaced.
#
# What this changes on the machine, and `node_down` undoes: sysctls (saved in $NODE_RUN first),
# the bridge $NODE_BRIDGE, iptables chains (KUBE-*, CNI-*, FERRY-*), mounts under $NODE_ROOT and
# $NODE_RUN, cgroups named kubepods, and the few paths the kubelet writes whatever its root dir.
# shellcheck shell=bash

. "$ENV_SCRIPTS/oci.sh"

NODE_NAME=ferry-node
NODE_BIN=$FERRY_CACHE/node/$K8S_VERSION-crictl-$CRICTL_VERSION/bin
COREDNS_BIN=$FERRY_CACHE/coredns/$COREDNS_VERSION/bin
NODE_ROOT=/var/lib/ferry-node
NODE_RUN=/run/ferry-node
NODE_SOCK=$NODE_RUN/containerd.sock
# The pods' network. The node's own address is the bridge's gateway address: the kubelet refuses a
# loopback node IP, and this kernel has no dummy interfaces. Services on the host that pods need
# listen here too (nothing else but loopback).
NODE_BRIDGE=ferry0
NODE_POD_CIDR=10.244.0.0/24
NODE_IP=10.244.0.1
# The kubernetes Service's ClusterIP: the first address of the API server's
# --service-cluster-ip-range (services.sh), which its serving certificate names.
NODE_API_SERVICE=10.0.0.1
NODE_SERVICE_CIDR=10.0.0.0/24
# Pods that ask for the real node tolerate this taint; everything else stays on the KWOK nodes.
NODE_TAINT_KEY=ferry.dev/real-node
# The kubelet's fixed ports (its defaults; only one kubelet per machine).
KUBELET_PORT=10250
KUBELET_HEALTHZ_PORT=10248
# What the kubelet, the CNI bridge and kube-proxy change; restored by node_down.
NODE_SYSCTLS=(vm.overcommit_memory kernel.panic kernel.panic_on_oops net.ipv4.ip_forward
  net.bridge.bridge-nf-call-iptables net.ipv4.conf.all.route_localnet)
# Paths the kubelet and CNI write whatever they are configured with; removed by node_down when
# they did not exist before the node first started.
NODE_STRAY_PATHS=(/var/lib/kubelet /var/log/containers /var/log/pods /var/lib/cni /opt/cni /opt/containerd)

node_enabled() { [ "${FERRY_NODE:-on}" != off ]; }
node_kubectl() { "$K8S_BIN/kubectl" --kubeconfig="$(KUBECONFIG_FILE)" "$@"; }
node_crictl() { "$NODE_BIN/crictl" --runtime-endpoint "unix://$NODE_SOCK" --image-endpoint "unix://$NODE_SOCK" --timeout 30s "$@"; }
node_ctr() { ctr --address "$NODE_SOCK" --namespace k8s.io "$@"; }
node_running() { RUN=$NODE_RUN running "$1"; }

# --- certificates ---------------------------------------------------------------------------
# make_node_pki: the kubelet's client certificate (the Node authorizer knows it by its name and
# group), its serving certificate for the node IP, and the API server's client certificate for
# the kubelet (logs, exec, port-forward), all signed by the environment's CA. Before the API
# server starts, since its flags name them.
make_node_pki() {
  local d=$STATE/pki
  [ -f "$d/node.kubeconfig" ] && return 0
  ( cd "$d"
    leaf() {
      openssl req -new -newkey rsa:2048 -nodes -subj "$2" -keyout "$1.key" -out "$1.csr" 2>/dev/null
      printf '%b' "$3" > "$1.ext"
      openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
        -extfile "$1.ext" -out "$1.crt" 2>/dev/null
    }
    local client="basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n"
    leaf node "/O=system:nodes/CN=system:node:$NODE_NAME" "$client"
    leaf apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "$client"
    leaf kube-proxy "/CN=system:kube-proxy" "$client"
    leaf kubelet-serving "/CN=$NODE_NAME" "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:$NODE_IP,DNS:$NODE_NAME\n"
    b64() { base64 -w0 < "$1"; }
    for who in node kube-proxy; do
      cat > "$who.kubeconfig.tmp" <<KC
apiVersion: v1
kind: Config
clusters: [{name: ferry-local, cluster: {server: "https://127.0.0.1:$API_PORT", certificate-authority-data: $(b64 ca.crt)}}]
users: [{name: $who, user: {client-certificate-data: $(b64 "$who.crt"), client-key-data: $(b64 "$who.key")}}]
contexts: [{name: ferry-local, context: {cluster: ferry-local, user: $who}}]
current-context: ferry-local
KC
      mv "$who.kubeconfig.tmp" "$who.kubeconfig"
    done )
}

# --- ownership ------------------------------------------------------------------------------
node_owner() { cat "$NODE_RUN/owner" 2>/dev/null || true; }
node_alive() { node_running containerd || node_running kubelet; }

# node_claim: makes this environment the node's owner, or refuses. Holds no lock itself: called
# under node_lock.
node_claim() {
  local owner; owner=$(node_owner)
  if [ -n "$owner" ] && [ "$owner" != "$FERRY_DIR" ]; then
    if node_alive && [ -d "$owner" ]; then
      die "the real node $NODE_NAME of another environment ($owner) runs on this machine, and a machine has room for one kubelet (ports $KUBELET_PORT, $KUBELET_HEALTHZ_PORT): run \`make env-down\` there (same FERRY_PORT_OFFSET), or start this environment without a node: FERRY_NODE=off make env-up"
    fi
    log "cleaning up the real node left by $owner (its checkout is gone or its node stopped)"
    node_teardown
  fi
  if [ -z "$(node_owner)" ] && port_listened "$KUBELET_PORT" "$KUBELET_HEALTHZ_PORT"; then
    die "a kubelet that is not this environment's answers on port $KUBELET_HEALTHZ_PORT or $KUBELET_PORT; stop it, or FERRY_NODE=off make env-up"
  fi
  mkdir -p "$NODE_RUN" "$NODE_ROOT"
  if [ ! -f "$NODE_RUN/saved.done" ]; then
    # What to restore on node_down, recorded before anything changes it.
    local key p
    : > "$NODE_RUN/sysctl.saved"
    for key in "${NODE_SYSCTLS[@]}"; do
      sysctl -n "$key" >/dev/null 2>&1 && echo "$key=$(sysctl -n "$key")" >> "$NODE_RUN/sysctl.saved"
    done
    : > "$NODE_RUN/created"
    for p in "${NODE_STRAY_PATHS[@]}"; do [ -e "$p" ] || echo "$p" >> "$NODE_RUN/created"; done
    touch "$NODE_RUN/saved.done"
  fi
  echo "$FERRY_DIR" > "$NODE_RUN/owner"
}

# node_lock: serialises node_up/node_down of all environments on this machine.
node_lock() { exec 8>/run/ferry-node.lock; flock 8; }

# --- network --------------------------------------------------------------------------------
node_network() {
  if ! ip link show "$NODE_BRIDGE" >/dev/null 2>&1; then
    ip link add "$NODE_BRIDGE" type bridge
  fi
  ip addr replace "$NODE_IP/${NODE_POD_CIDR#*/}" dev "$NODE_BRIDGE"
  ip link set "$NODE_BRIDGE" up
  # Routing between pods and the host's services on the bridge; kube-proxy's rules for
  # pod-to-pod traffic through a Service need bridged frames to pass iptables.
  sysctl -qw net.ipv4.ip_forward=1
  sysctl -qw net.bridge.bridge-nf-call-iptables=1
  # Pods reach the host (the bridge address) and each other, nothing beyond the machine.
  iptables -w -N FERRY-NODE 2>/dev/null || iptables -w -F FERRY-NODE
  iptables -w -A FERRY-NODE -i "$NODE_BRIDGE" ! -o "$NODE_BRIDGE" -j DROP
  iptables -w -C FORWARD -j FERRY-NODE 2>/dev/null || iptables -w -I FORWARD 1 -j FERRY-NODE
  # In-cluster clients on the node (the operator's pod: `make demo`) reach the API server, which
  # listens on loopback only, at the kubernetes Service's address (in its certificate): DNAT of
  # what comes from the bridge for $NODE_API_SERVICE:443 to 127.0.0.1:$API_PORT. route_localnet
  # (this bridge only) lets the kernel route bridge traffic to loopback; nothing new listens.
  # The API server (and anything on the host) reaches ClusterIPs, e.g. the webhook Service,
  # through kube-proxy's DNAT; the route keeps a Service address without a rule on the bridge
  # instead of the default route (off the machine).
  ip route replace "$NODE_SERVICE_CIDR" dev "$NODE_BRIDGE"
  sysctl -qw "net.ipv4.conf.$NODE_BRIDGE.route_localnet=1"
  iptables -w -t nat -N FERRY-NODE-API 2>/dev/null || iptables -w -t nat -F FERRY-NODE-API
  iptables -w -t nat -A FERRY-NODE-API -i "$NODE_BRIDGE" -d "$NODE_API_SERVICE" -p tcp --dport 443 \
    -j DNAT --to-destination "127.0.0.1:$API_PORT"
  iptables -w -t nat -C PREROUTING -j FERRY-NODE-API 2>/dev/null || iptables -w -t nat -A PREROUTING -j FERRY-NODE-API
  mkdir -p "$NODE_RUN/cni/net.d" "$NODE_ROOT/cni"
  cat > "$NODE_RUN/cni/net.d/10-ferry.conflist" <<CNI
{
  "cniVersion": "1.0.0",
  "name": "ferry",
  "plugins": [
    {
      "type": "bridge", "bridge": "$NODE_BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
      "ipam": {
        "type": "host-local", "dataDir": "$NODE_ROOT/cni/networks",
        "ranges": [[{"subnet": "$NODE_POD_CIDR", "gateway": "$NODE_IP"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
CNI
}

# --- containerd -----------------------------------------------------------------------------
start_containerd() {
  node_running containerd && return 0
  mkdir -p "$NODE_RUN" "$NODE_ROOT/containerd"
  # restrict_oom_score_adj: this machine lacks CAP_SYS_RESOURCE, and without it every sandbox fails
  # with runc's "can't get final child's PID from pipe: EOF" (the cause, "failed to update
  # /proc/self/oom_score_adj: Permission denied", shows only when runc is run by hand).
  # SystemdCgroup=false: PID 1 is not systemd. netns_mounts_under_state_dir: pods' network
  # namespaces under $NODE_RUN, so node_down finds them. The opt plugin would create /opt/containerd.
  # Registry: every image is imported (no registry here), so docker.io's upstream is a closed
  # loopback port: a missing image fails at once instead of sending a lookup of
  # registry-1.docker.io to the machine's resolver (seen when the kubelet, under disk pressure,
  # had garbage-collected the pause image). containerd 1.6 refuses a hosts.toml without a [host]
  # table ("invalid `host` tree") and then falls back to the upstream, hence both.
  mkdir -p "$NODE_RUN/certs.d/docker.io"
  printf 'server = "http://127.0.0.1:1"\n[host."http://127.0.0.1:1"]\n  capabilities = ["pull", "resolve"]\n' \
    > "$NODE_RUN/certs.d/docker.io/hosts.toml"
  cat > "$NODE_RUN/containerd.toml" <<TOML
version = 2
root = "$NODE_ROOT/containerd"
state = "$NODE_RUN/containerd"
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "$NODE_SOCK"
[ttrpc]
  address = "$NODE_RUN/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$(pause_ref)"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$NODE_RUN/certs.d"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$NODE_RUN/cni/net.d"
TOML
  log "starting containerd $(containerd --version | awk '{print $3}') (socket $NODE_SOCK)"
  RUN=$NODE_RUN start_bg containerd containerd --config "$NODE_RUN/containerd.toml" 8>&-
}
containerd_ready() { node_ctr version; }
stop_containerd() { RUN=$NODE_RUN stop_bg containerd; }

# The pod sandbox image: a static pause binary built here (no registry), keyed by its source.
pause_tag() { cat "$ENV_SCRIPTS/node/pause.c" "$ENV_SCRIPTS/oci.sh" | sha256sum | cut -c1-12; }
pause_ref() { echo "docker.io/ferry/pause:$(pause_tag)"; }
pause_archive() { echo "$FERRY_CACHE/node/pause-$(pause_tag).tar"; }
import_pause() {
  local tar; tar=$(pause_archive)
  if [ ! -f "$tar" ]; then
    local root; root=$(mktemp -d)
    mkdir -p "$root/bin"
    gcc -static -Os -s -o "$root/bin/pause" "$ENV_SCRIPTS/node/pause.c"
    oci_archive "$root" "$tar" "$(pause_ref)" "65535:65535" '["/bin/pause"]' '[]'
    rm -rf "$root"
  fi
  node_ctr images import "$tar" >/dev/null
}

# The tests' image: Debian's static busybox (sh, httpd, nslookup, wget) and a non-root user, keyed
# by the busybox package's version.
testbox_tag() { { dpkg-query -W -f '${Version}' busybox-static; cat "$ENV_SCRIPTS/oci.sh"; } | sha256sum | cut -c1-12; }
testbox_ref() { echo "docker.io/ferry/testbox:$(testbox_tag)"; }
import_testbox() {
  local tar; tar=$FERRY_CACHE/node/testbox-$(testbox_tag).tar
  if [ ! -f "$tar" ]; then
    local root; root=$(mktemp -d)
    mkdir -p "$root/bin"
    cp /bin/busybox "$root/bin/busybox"
    local applet
    for applet in $(/bin/busybox --list); do
      [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
    done
    rootfs_add_user "$root" 65532 nonroot
    oci_archive "$root" "$tar" "$(testbox_ref)" "65532:65532" '["/bin/sh"]' '["PATH=/bin"]'
    rm -rf "$root"
  fi
  node_ctr images import "$tar" >/dev/null
}

# --- kubelet --------------------------------------------------------------------------------
start_kubelet() {
  node_running kubelet && return 0
  local d=$STATE/pki dir=$NODE_ROOT/kubelet
  mkdir -p "$dir" "$NODE_ROOT/pod-logs"
  # failCgroupV1: false — this machine's cgroups are v1 and kubelet 1.35+ refuses v1 otherwise.
  # cgroupDriver: cgroupfs — no systemd, and containerd 1.6 lacks the CRI call that reports it.
  # resolvConf "": pods must not use the machine's resolver; their nameserver is CoreDNS at the
  # node's address (start_coredns), reached without kube-proxy.
  # Image GC off: the images `make images` imports are not in any registry to pull again.
  cat > "$NODE_RUN/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
tlsCertFile: $d/kubelet-serving.crt
tlsPrivateKeyFile: $d/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $d/ca.crt}
authorization: {mode: Webhook}
failCgroupV1: false
cgroupDriver: cgroupfs
failSwapOn: false
containerRuntimeEndpoint: unix://$NODE_SOCK
podLogsDir: $NODE_ROOT/pod-logs
resolvConf: ""
clusterDNS: [$NODE_IP]
clusterDomain: cluster.local
registerNode: true
registerWithTaints: [{key: $NODE_TAINT_KEY, value: "true", effect: NoSchedule}]
# Absolute disk thresholds, not percentages: 1% of a large disk that several checkouts' target
# dirs fill is gigabytes, and the DiskPressure taint it set kept every test pod off the node
# while there was still room. 5 s instead of 5 minutes before the taint goes once there is.
evictionHard: {memory.available: 50Mi, nodefs.available: 256Mi, nodefs.inodesFree: 1%, imagefs.available: 256Mi}
evictionPressureTransitionPeriod: 5s
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
maxPods: 40
serializeImagePulls: false
rotateCertificates: false
shutdownGracePeriod: 0s
YAML
  log "starting kubelet $K8S_VERSION as node $NODE_NAME ($NODE_IP)"
  RUN=$NODE_RUN start_bg kubelet "$NODE_BIN/kubelet" --config="$NODE_RUN/kubelet.yaml" \
    --kubeconfig="$d/node.kubeconfig" --root-dir="$dir" --cert-dir="$dir/pki" \
    --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" --node-labels=ferry.dev/node=real --v=1 8>&-
}
stop_kubelet() { RUN=$NODE_RUN stop_bg kubelet; }
node_ready() { node_kubectl wait --for=condition=Ready "node/$NODE_NAME" --timeout=2s; }

# --- Kafka and PostgreSQL for pods ----------------------------------------------------------
# Pods cannot reach 127.0.0.1 of the host: Kafka gets a second SASL listener on the node's
# address (advertised there, so pods' clients stay on it), PostgreSQL listens there too.
KAFKA_PODS_PORT=${FERRY_KAFKA_PODS_PORT:-$((19100 + off))}
node_owned_here() { node_enabled && [ "$(node_owner)" = "$FERRY_DIR" ] && ip -4 addr show "$NODE_BRIDGE" 2>/dev/null | grep -qF " $NODE_IP/"; }
# node_kafka_listener FILE: adds the PODS listener to a generated server.properties.
node_kafka_listener() {
  node_owned_here || return 0
  sed -i -e "/^listeners=/s|\$|,PODS://$NODE_IP:$KAFKA_PODS_PORT|" \
    -e "/^advertised.listeners=/s|\$|,PODS://$NODE_IP:$KAFKA_PODS_PORT|" \
    -e "/^listener.security.protocol.map=/s|\$|,PODS:SASL_PLAINTEXT|" "$1"
  # A SASL listener needs a JAAS entry even when it only serves (SCRAM checks the credentials
  # kept in the cluster metadata).
  echo "listener.name.pods.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;" >> "$1"
}
# node_pg_listen: the extra listen address for PostgreSQL's listen_addresses.
node_pg_listen() { node_owned_here && echo ",$NODE_IP" || true; }
# node_pg_hba FILE: lets the pods' network in without a password (the shop's roles have none,
# demo.sh); loopback asks for one (services.sh). A DSN's password is then not checked from pods.
node_pg_hba() { echo "host all all $NODE_POD_CIDR trust" >> "$1"; }

# node_prepare: claims the node and makes its bridge, before Kafka and PostgreSQL start (they
# listen on the bridge's address). The lock is not held across their starts: a child would
# inherit it.
node_prepare() {
  node_enabled || return 0
  [ "$(id -u)" = 0 ] || die "the real node needs root (containerd, bridges, iptables); or FERRY_NODE=off make env-up"
  node_lock
  node_claim
  node_network
  exec 8>&-
}

# --- Services and DNS -----------------------------------------------------------------------
# kube-proxy (iptables mode) makes ClusterIPs work for pods and the host; NodePorts only on the
# pods' bridge, never on the machine's real interface; conntrack sysctls left alone.
start_kube-proxy() {
  node_running kube-proxy && return 0
  log "starting kube-proxy $K8S_VERSION (iptables)"
  RUN=$NODE_RUN start_bg kube-proxy "$NODE_BIN/kube-proxy" --kubeconfig="$STATE/pki/kube-proxy.kubeconfig" \
    --hostname-override="$NODE_NAME" --proxy-mode=iptables --cluster-cidr="$NODE_POD_CIDR" \
    --nodeport-addresses="$NODE_POD_CIDR" --healthz-bind-address=127.0.0.1:10256 \
    --metrics-bind-address=127.0.0.1:10249 --conntrack-max-per-core=0 \
    --conntrack-tcp-timeout-established=0 --conntrack-tcp-timeout-close-wait=0 --v=1 8>&-
}
kube_proxy_ready() { curl -fsS http://127.0.0.1:10256/healthz; }

# CoreDNS on the host, at the node's address (the pods' nameserver): cluster.local from the API
# server, and NXDOMAIN for every other name, so no pod query leaves the machine.
start_coredns() {
  node_running coredns && return 0
  cat > "$NODE_RUN/Corefile" <<COREFILE
cluster.local:53 in-addr.arpa:53 ip6.arpa:53 {
  bind $NODE_IP
  errors
  kubernetes cluster.local in-addr.arpa ip6.arpa {
    kubeconfig $(KUBECONFIG_FILE) ferry-local
    pods insecure
    fallthrough in-addr.arpa ip6.arpa
  }
  cache 5
}
.:53 {
  bind $NODE_IP
  template ANY ANY {
    rcode NXDOMAIN
  }
}
COREFILE
  log "starting CoreDNS $COREDNS_VERSION on $NODE_IP:53"
  RUN=$NODE_RUN start_bg coredns "$COREDNS_BIN/coredns" -conf "$NODE_RUN/Corefile" 8>&-
}
coredns_ready() { port_listened 53; }

# --- up and down ----------------------------------------------------------------------------
node_up() {
  node_enabled || { log "FERRY_NODE=off: no real node"; return 0; }
  [ "$(id -u)" = 0 ] || die "the real node needs root (containerd, bridges, iptables); or FERRY_NODE=off make env-up"
  node_lock
  node_claim
  node_network
  start_containerd
  wait_for containerd 60 containerd_ready
  import_pause
  import_testbox
  start_kubelet
  start_kube-proxy
  start_coredns
  wait_for "node $NODE_NAME" 120 node_ready
  wait_for kube-proxy 60 kube_proxy_ready
  wait_for CoreDNS 60 coredns_ready
  exec 8>&-
}

# node_down: removes this environment's node and everything it left on the machine.
node_down() {
  [ -d "$NODE_RUN" ] || return 0
  node_lock
  local owner; owner=$(node_owner)
  if [ -n "$owner" ] && [ "$owner" != "$FERRY_DIR" ]; then
    log "the real node belongs to $owner; left alone"
  else
    node_teardown
  fi
  exec 8>&-
}

# node_teardown: no matter who owns it. Order matters: the kubelet first (or it restarts pods),
# then the pods through the CRI (which also tears down their network), then containerd, then
# what is left in the kernel.
node_teardown() {
  local name
  for name in coredns kube-proxy kubelet; do RUN=$NODE_RUN stop_bg "$name"; done
  if node_running containerd && [ -x "$NODE_BIN/crictl" ]; then
    node_crictl rmp --all --force >/dev/null 2>&1 || true
    node_crictl rm --all --force >/dev/null 2>&1 || true
  fi
  stop_containerd
  # Shims outlive containerd: end the ones serving this node's socket, by pid.
  local pid
  for pid in $(grep -lsF -- "$NODE_SOCK" /proc/[0-9]*/cmdline | cut -d/ -f3); do
    kill -KILL "$pid" 2>/dev/null || true
  done
  # Deepest first, so nested mounts come off before their parents.
  local m
  for m in $(awk -v a="$NODE_ROOT" -v b="$NODE_RUN" 'index($5, a) == 1 || index($5, b) == 1 {print $5}' /proc/self/mountinfo | sort -r); do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
  ip link del "$NODE_BRIDGE" 2>/dev/null || true
  node_iptables_clean
  local cg
  for cg in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
    [ -d "$cg" ] && find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
  if [ -f "$NODE_RUN/sysctl.saved" ]; then
    local line
    while IFS= read -r line; do sysctl -qw "$line" 2>/dev/null || true; done < "$NODE_RUN/sysctl.saved"
  fi
  if [ -f "$NODE_RUN/created" ]; then
    local p
    while IFS= read -r p; do [ -n "$p" ] && rm -rf "$p"; done < "$NODE_RUN/created"
  fi
  rm -rf "$NODE_ROOT" "$NODE_RUN"
}

# Every chain the kubelet (KUBE-*), kube-proxy (KUBE-*), CNI plugins (CNI-*) and node_network
# (FERRY-*) made, and every rule that jumps to one, in every table; other rules stay.
node_iptables_clean() {
  local tool t
  for tool in iptables ip6tables; do
    command -v "$tool-save" >/dev/null || continue
    for t in filter nat mangle raw; do
      # A dump of one table restores just that table (without --noflush, only the tables in the
      # input are replaced).
      if "$tool-save" -t "$t" 2>/dev/null | grep -qE 'KUBE-|CNI-|FERRY-'; then
        "$tool-save" -t "$t" | grep -vE 'KUBE-|CNI-|FERRY-' | "$tool-restore" -w || true
      fi
    done
  done
}

# node_env: the lines `.ferry/env` gets about the node, for tests and the demo.
node_env() {
  if node_enabled; then
    cat <<ENV
# The real node (scripts/env/node.sh): pods that tolerate the taint \$FERRY_NODE_TAINT=true:NoSchedule
# and select kubernetes.io/hostname=\$FERRY_NODE_NAME really run; host services that pods use
# listen on \$FERRY_NODE_IP (the pods' bridge gateway).
export FERRY_NODE_NAME='$NODE_NAME'
export FERRY_NODE_TAINT='$NODE_TAINT_KEY'
export FERRY_NODE_IP='$NODE_IP'
# Kafka (SASL_PLAINTEXT, the same users) and PostgreSQL as pods on the node reach them.
export FERRY_NODE_KAFKA_BOOTSTRAP='$NODE_IP:$KAFKA_PODS_PORT'
export FERRY_NODE_DATABASE_URL='postgresql://postgres:$(cat "$STATE/postgres-password")@$NODE_IP:$PG_PORT/postgres'
# A local image with a static busybox and user 65532, for tests' pods.
export FERRY_TESTBOX_IMAGE='$(testbox_ref)'
ENV
  else
    echo "export FERRY_NODE='off'"
  fi
}
