#!/usr/bin/env bash
# `make images`: builds the ferry-operator and ferry-sidecar images as OCI archives without Docker
# or a registry, tagged with the workspace's crate version, and imports them into the real node's
# containerd. Each image holds the binary (debug info stripped), exactly the shared libraries
# `ldd` lists for it, the CA bundle (Kafka over TLS), /etc/passwd with a non-root user and /tmp.
#
# The binaries come from the `dev` profile unless FERRY_IMAGE_PROFILE=release: `make test` builds
# them anyway (integration tests run target/debug/ferry-*), so the images cost no extra compile
# in CI, where a release build of both would add many minutes on 2 cores. Users building images
# to ship use the Dockerfiles (release) or FERRY_IMAGE_PROFILE=release here.
. "$(dirname "$0")/lib.sh"
. "$ENV_SCRIPTS/node.sh"

profile=${FERRY_IMAGE_PROFILE:-debug}
case $profile in debug) flags=() ;; release) flags=(--release) ;; *) die "FERRY_IMAGE_PROFILE is debug or release" ;; esac
version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$REPO/Cargo.toml")
[ -n "$version" ] || die "no [workspace.package] version in $REPO/Cargo.toml"
target=${CARGO_TARGET_DIR:-$REPO/target}
out=$target/images
# The non-root user of both images; the pods' securityContext may name it (runAsUser) too.
IMAGE_UID=65532

# FERRY_IMAGE_BUILD=no: pack what is in target/ (make test has just built it for its tests).
if [ "${FERRY_IMAGE_BUILD:-yes}" != no ]; then
  log "building ferry-operator and ferry-sidecar ($profile)"
  (cd "$REPO" && cargo build --locked "${flags[@]}" -p ferry-operator -p ferry-sidecar --bins)
fi

for bin in ferry-operator ferry-sidecar; do
  ref=docker.io/ferry/$bin:$version
  root=$(mktemp -d)
  rootfs_add_binary "$root" "$target/$profile/$bin" "/usr/local/bin/$bin"
  rootfs_add_user "$root" "$IMAGE_UID" ferry
  if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    mkdir -p "$root/etc/ssl/certs"
    cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
  fi
  oci_archive "$root" "$out/$bin-$version.tar" "$ref" "$IMAGE_UID:$IMAGE_UID" "[\"/usr/local/bin/$bin\"]"
  rm -rf "$root"
  log "$ref: $out/$bin-$version.tar ($(du -h "$out/$bin-$version.tar" | cut -f1))"
done

if ! node_enabled; then
  log "FERRY_NODE=off: images built, not imported"
elif [ "$(node_owner)" = "$FERRY_DIR" ] && node_running containerd; then
  for bin in ferry-operator ferry-sidecar; do
    node_ctr images import "$out/$bin-$version.tar" >/dev/null
    log "imported docker.io/ferry/$bin:$version into $NODE_NAME's containerd"
  done
else
  die "this environment runs no real node (make env-up first); the archives are in $out"
fi
