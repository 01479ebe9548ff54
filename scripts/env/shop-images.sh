#!/usr/bin/env bash
# `make shop-images`: OCI images of the shop's three Django services (examples/shop) without
# Docker or a registry, imported into the real node's containerd, tagged with the workspace's
# version (what examples/shop/kustomization.yaml names). The Dockerfiles stay for Docker users;
# these images hold the same things, from this machine instead of python:3.12-slim:
#   layer 1 (shared by the three images, stored once in containerd): the host's Debian python3
#     (binary, the shared libraries ldd lists for it and its extension modules, the standard
#     library without its tests/IDLE/tk) and a venv at /opt/venv with the pinned
#     requirements.txt from PyPI;
#   layer 2: /app/shared and /app/<service>, /etc/passwd with the non-root user 65532.
# Cached in $FERRY_CACHE/shop-images, keyed by what goes in: the base layer by the pins and the
# python version, each archive by the base and the service's files. An unchanged image is not
# rebuilt, and its re-import is a no-op in containerd.
. "$(dirname "$0")/lib.sh"
. "$ENV_SCRIPTS/node.sh"

version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$REPO/Cargo.toml")
[ -n "$version" ] || die "no [workspace.package] version in $REPO/Cargo.toml"
shop=$REPO/examples/shop
cache=$FERRY_CACHE/shop-images
# The non-root user the shop's pods run as (their securityContext names 65532, as the Dockerfiles).
IMAGE_UID=65532
SERVICES=(user-service order-service notification-service)

# Debian's python3 (not a pyenv or other shim first on PATH): its libraries are the system's.
python=$(readlink -f /usr/bin/python3)
[ -x "$python" ] || die "no /usr/bin/python3: apt-get install -y python3 python3-venv"
pyver=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
pins=$(cat "$shop/requirements.txt" "$python" | sha256sum | cut -c1-12)
base=$cache/base-$pyver-$pins.tar

# --- layer 1: python + venv -----------------------------------------------------------------
if [ ! -f "$base" ]; then
  log "building the shop's Python base layer (python $pyver from the host, pinned requirements from PyPI)"
  root=$(mktemp -d)
  rootfs_add_binary "$root" "$python" "$python"
  ln -s "$(basename "$python")" "$root/usr/bin/python3"
  ln -s "$(basename "$python")" "$root/usr/bin/python"
  stdlib=/usr/lib/python$pyver
  mkdir -p "$root$stdlib"
  tar -C "$stdlib" --exclude=./test --exclude=./idlelib --exclude=./tkinter --exclude=./turtledemo \
    --exclude=./ensurepip --exclude=./lib2to3 --exclude='*/test/*' -cf - . | tar -C "$root$stdlib" -xf -
  # The extension modules' own libraries (libssl for _ssl, libffi for _ctypes, ...).
  for lib in $(ldd "$stdlib"/lib-dynload/*.so 2>/dev/null | grep -oE "=> /[^ ]+" | cut -c4- | sort -u); do
    [ -e "$root$lib" ] && continue
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
  # The venv is made in place at its final path under a scratch root (its scripts name their
  # interpreter by path), then moved into the layer's tree.
  build=$(mktemp -d)
  "$python" -m venv "$build/opt/venv"
  "$build/opt/venv/bin/pip" install --quiet --disable-pip-version-check --no-compile \
    -r "$shop/requirements.txt"
  "$build/opt/venv/bin/pip" uninstall --quiet -y pip setuptools >/dev/null 2>&1 || true
  grep -rlI "$build/opt/venv" "$build/opt/venv/bin" | xargs -r sed -i "s|$build/opt/venv|/opt/venv|g"
  sed -i "s|$build/opt/venv|/opt/venv|g" "$build/opt/venv/pyvenv.cfg"
  mkdir -p "$root/opt"
  mv "$build/opt/venv" "$root/opt/venv"
  # The system libraries the wheels' extension modules load (psycopg-binary bundles libpq but
  # not libc's pieces); the wheels' own bundled ones are under the venv already.
  for lib in $(find "$root/opt/venv" -name '*.so*' -type f -exec ldd {} + 2>/dev/null | grep -oE "=> /(usr/)?lib[^ ]+" | cut -c4- | sort -u); do
    [ -e "$root$lib" ] && continue
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
  # Byte-compiled once here: the containers' root filesystem is read-only.
  "$python" -m compileall -q -j 0 "$root/opt/venv/lib" >/dev/null
  # Django reads zoneinfo for TIME_ZONE=UTC only; the file is tiny.
  if [ -f /usr/share/zoneinfo/UTC ]; then mkdir -p "$root/usr/share/zoneinfo"; cp /usr/share/zoneinfo/UTC "$root/usr/share/zoneinfo/"; fi
  mkdir -p "$cache"
  oci_layer "$root" "$base"
  rm -rf "$root" "$build"
  log "base layer: $base ($(du -h "$base" | cut -f1))"
fi

# --- layer 2 and the archives ---------------------------------------------------------------
archives=()
for service in "${SERVICES[@]}"; do
  module=${service//-/_}
  ref=docker.io/ferry-shop/$service:$version
  key=$( (basename "$base"; cd "$shop" && find shared "$service" -type f ! -path '*/__pycache__/*' -print0 | sort -z | xargs -0 sha256sum) | sha256sum | cut -c1-12)
  out=$cache/$service-$version-$key.tar
  if [ ! -f "$out" ]; then
    root=$(mktemp -d)
    mkdir -p "$root/app"
    (cd "$shop" && tar --exclude=__pycache__ -cf - shared "$service") | tar -C "$root/app" -xf -
    "$python" -m compileall -q "$root/app" >/dev/null
    rootfs_add_user "$root" "$IMAGE_UID" app
    work=$(mktemp -d)
    oci_layer "$root" "$work/app.tar"
    env_json="[\"PATH=/opt/venv/bin:/usr/local/bin:/usr/bin:/bin\",\"PYTHONPATH=/app/shared\",\"DJANGO_SETTINGS_MODULE=$module.settings\",\"PYTHONDONTWRITEBYTECODE=1\",\"PYTHONUNBUFFERED=1\"]"
    oci_archive_layers "$out" "$ref" "$IMAGE_UID:$IMAGE_UID" \
      "[\"gunicorn\",\"--bind\",\"0.0.0.0:8000\",\"--workers\",\"2\",\"--worker-tmp-dir\",\"/tmp\",\"--access-logfile\",\"-\",\"$module.wsgi\"]" \
      "$env_json" "/app/$service" "$base" "$work/app.tar"
    rm -rf "$root" "$work"
    # Older archives of this service are superseded.
    find "$cache" -maxdepth 1 -name "$service-*.tar" ! -name "$(basename "$out")" -delete
    log "$ref: $out ($(du -h "$out" | cut -f1))"
  fi
  archives+=("$ref=$out")
done

if ! node_enabled; then
  log "FERRY_NODE=off: shop images built, not imported"
elif [ "$(node_owner)" = "$FERRY_DIR" ] && node_running containerd; then
  for a in "${archives[@]}"; do
    node_ctr images import "${a#*=}" >/dev/null
    log "imported ${a%%=*} into $NODE_NAME's containerd"
  done
else
  die "this environment runs no real node (make env-up first); the archives are in $cache"
fi
