#!/usr/bin/env bash
# Installs or builds whatever the local environment lacks, cached by version under $FERRY_CACHE:
# Debian packages (PostgreSQL, a JDK, Maven), Kafka's jars from Maven Central, and the
# Kubernetes control plane, KWOK, helm and promtool from the Go module proxy. Does nothing that
# is cached.
. "$(dirname "$0")/lib.sh"
. "$ENV_SCRIPTS/node.sh"

need_apt=()
command -v java >/dev/null || need_apt+=(default-jre-headless)
command -v mvn >/dev/null || need_apt+=(maven)
command -v openssl >/dev/null || need_apt+=(openssl)
command -v curl >/dev/null || need_apt+=(curl)
command -v runuser >/dev/null || need_apt+=(util-linux)
[ -n "$(pg_bin)" ] || need_apt+=(postgresql)
# Rust crates: librdkafka builds from source with OpenSSL and zlib; tests use cmake-free builds.
dpkg -s libssl-dev >/dev/null 2>&1 || need_apt+=(libssl-dev)
dpkg -s zlib1g-dev >/dev/null 2>&1 || need_apt+=(zlib1g-dev)
command -v pkg-config >/dev/null || need_apt+=(pkg-config)
command -v python3 >/dev/null || need_apt+=(python3)
# The real node (node.sh): a CRI runtime, an OCI runtime, CNI plugins, and what the kubelet, the
# CNI bridge and kube-proxy call; gcc builds the pause binary, objcopy strips image binaries.
if node_enabled; then
  command -v containerd >/dev/null || need_apt+=(containerd)
  command -v runc >/dev/null || need_apt+=(runc)
  [ -x /usr/lib/cni/bridge ] || need_apt+=(containernetworking-plugins)
  command -v iptables >/dev/null || need_apt+=(iptables)
  command -v conntrack >/dev/null || need_apt+=(conntrack)
  command -v ip >/dev/null || need_apt+=(iproute2)
  command -v gcc >/dev/null || need_apt+=(gcc libc6-dev)
  command -v objcopy >/dev/null || need_apt+=(binutils)
  # The tests' pods run a static busybox (sh, httpd, nslookup, wget) from a local image.
  dpkg -s busybox-static >/dev/null 2>&1 || need_apt+=(busybox-static)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || die "missing Debian packages: ${need_apt[*]} (install them, or run as root)"
  log "installing Debian packages: ${need_apt[*]}"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need_apt[@]}" >/dev/null
fi
command -v go >/dev/null || die "Go is needed to build the Kubernetes control plane (go1.26 or newer)"
command -v cargo >/dev/null || die "Rust (cargo) is needed to build Ferry"
# `install.sh packages`: only the Debian packages (what Rust's build needs), not the Go builds.
[ "${1:-}" = packages ] && exit 0

# Two checkouts bringing up environments at once must not build into the same cache together.
mkdir -p "$FERRY_CACHE"
exec 9>"$FERRY_CACHE/.install.lock"
flock 9

# build_into DIR SCRIPT ENV...: runs SCRIPT with OUT=a temporary directory and moves it to DIR
# only on success, so an interrupted build is never taken for a cached one.
build_into() {
  local dir=$1 script=$2; shift 2
  [ -d "$dir" ] && return 0
  local tmp=$dir.partial
  rm -rf "$tmp"; mkdir -p "$(dirname "$dir")" "$LOGS"
  log "building $(basename "$(dirname "$dir")") into $(dirname "$dir") (log: $LOGS/build-$(basename "$script" .sh).log)"
  if ! env "$@" OUT="$tmp" bash "$ENV_SCRIPTS/$script" >"$LOGS/build-$(basename "$script" .sh).log" 2>&1; then
    tail -n 30 "$LOGS/build-$(basename "$script" .sh).log" >&2
    die "$script failed"
  fi
  mv "$tmp" "$dir"
}

# Go's module downloads are kept with the rest of the cache (so an empty $FERRY_CACHE really is a
# cold start); its build cache is only needed while building, since the binaries are cached.
export GOMODCACHE=${GOMODCACHE:-$FERRY_CACHE/go/mod}
GOCACHE=$(mktemp -d); export GOCACHE
trap 'rm -rf "$GOCACHE"' EXIT
build_into "$K8S_BIN" build-k8s.sh K8S_VERSION="$K8S_VERSION" ETCD_VERSION="$ETCD_VERSION"
if node_enabled; then
  build_into "$NODE_BIN" build-node.sh K8S_VERSION="$K8S_VERSION" CRICTL_VERSION="$CRICTL_VERSION"
  build_into "$COREDNS_BIN" build-coredns.sh COREDNS_VERSION="$COREDNS_VERSION"
fi
build_into "$TOOLS_BIN" build-tools.sh KWOK_VERSION="$KWOK_VERSION" HELM_VERSION="$HELM_VERSION" K8S_VERSION="$K8S_VERSION"
build_into "$PROMTOOL_BIN" build-promtool.sh PROMTOOL_VERSION="$PROMTOOL_VERSION"

if [ ! -d "$KAFKA_LIBS" ]; then
  log "resolving Kafka $KAFKA_VERSION from Maven Central"
  tmp=$KAFKA_LIBS.partial; rm -rf "$tmp"; mkdir -p "$LOGS"
  mvn -q -B -f "$ENV_SCRIPTS/kafka/pom.xml" -Dkafka.version="$KAFKA_VERSION" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp" \
    >"$LOGS/build-kafka.log" 2>&1 || { tail -n 30 "$LOGS/build-kafka.log" >&2; die "resolving Kafka failed"; }
  # Kafka 4.x logs through slf4j 1.7: the binding in the pom must match, or logging is silent.
  ls "$tmp"/slf4j-api-1.7*.jar >/dev/null 2>&1 || die "Kafka $KAFKA_VERSION moved off slf4j 1.7; update scripts/env/kafka/pom.xml"
  mv "$tmp" "$KAFKA_LIBS"
fi
