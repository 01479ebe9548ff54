# oci_archive: writes a one-layer OCI image archive that `ctr images import` (and skopeo, podman)
# accept, from a directory tree, with no Docker and no registry. Sourced, not run.
# shellcheck shell=bash

# oci_archive ROOTFS OUT.tar REF USER ENTRYPOINT_JSON [ENV_JSON]
#   ROOTFS          directory whose contents become the image's only layer
#   REF             full reference, e.g. docker.io/ferry/ferry-sidecar:0.1.0 (the CRI normalises
#                   short names to docker.io/..., so pods naming ferry/ferry-sidecar:0.1.0 find it)
#   USER            "uid:gid" the container runs as
#   ENTRYPOINT_JSON e.g. '["/usr/local/bin/ferry-sidecar"]'
# The layer is an uncompressed, reproducible tar (sorted, mtime 0, numeric owners): the same tree
# gives the same digest, so re-importing an unchanged image is a no-op in containerd.
oci_archive() {
  local rootfs=$1 out=$2 ref=$3 user=$4 entrypoint=$5 env_json=${6:-'["PATH=/usr/local/bin:/usr/bin:/bin"]'}
  local work; work=$(mktemp -d)
  oci_layer "$rootfs" "$work/layer.tar"
  oci_archive_layers "$out" "$ref" "$user" "$entrypoint" "$env_json" / "$work/layer.tar"
  rm -rf "$work"
}

# oci_layer ROOTFS OUT.tar: the reproducible, uncompressed layer tar of a directory tree (sorted,
# mtime 0, numeric owners), so the same tree always gives the same digest. The tree's root
# becomes the image's / (mktemp -d makes it 0700, which would lock a non-root user out).
oci_layer() {
  chmod 0755 "$1"
  tar -C "$1" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=posix \
    --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime -cf "$2.partial" .
  mv "$2.partial" "$2"
}

# oci_archive_layers OUT.tar REF USER ENTRYPOINT_JSON ENV_JSON WORKDIR LAYER.tar...
#   the same archive as oci_archive from layer tars made by oci_layer, lowest first: images
#   sharing a lower layer (e.g. a Python runtime) store it once in containerd.
oci_archive_layers() {
  local out=$1 ref=$2 user=$3 entrypoint=$4 env_json=$5 workdir=$6; shift 6
  local work; work=$(mktemp -d)
  mkdir -p "$work/blobs/sha256"
  local layer digest size diff_ids="" layers=""
  for layer in "$@"; do
    digest=$(sha256sum "$layer" | cut -d' ' -f1); size=$(stat -c %s "$layer")
    cp "$layer" "$work/blobs/sha256/$digest"
    diff_ids+="${diff_ids:+,}\"sha256:$digest\""
    layers+="${layers:+,}{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\",\"digest\":\"sha256:$digest\",\"size\":$size}"
  done
  printf '{"architecture":"amd64","os":"linux","config":{"User":"%s","Entrypoint":%s,"Env":%s,"WorkingDir":"%s"},"rootfs":{"type":"layers","diff_ids":[%s]},"history":[{"created":"1970-01-01T00:00:00Z","created_by":"scripts/env/oci.sh"}]}' \
    "$user" "$entrypoint" "$env_json" "$workdir" "$diff_ids" > "$work/config.json"
  local config_digest config_size
  config_digest=$(sha256sum "$work/config.json" | cut -d' ' -f1); config_size=$(stat -c %s "$work/config.json")
  mv "$work/config.json" "$work/blobs/sha256/$config_digest"
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[%s]}' \
    "$config_digest" "$config_size" "$layers" > "$work/manifest.json"
  local manifest_digest manifest_size
  manifest_digest=$(sha256sum "$work/manifest.json" | cut -d' ' -f1); manifest_size=$(stat -c %s "$work/manifest.json")
  mv "$work/manifest.json" "$work/blobs/sha256/$manifest_digest"
  # containerd names the imported image after this annotation.
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"platform":{"architecture":"amd64","os":"linux"},"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}]}' \
    "$manifest_digest" "$manifest_size" "$ref" "${ref##*:}" > "$work/index.json"
  printf '{"imageLayoutVersion":"1.0.0"}' > "$work/oci-layout"
  mkdir -p "$(dirname "$out")"
  tar -C "$work" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf "$out.partial" oci-layout index.json blobs
  mv "$out.partial" "$out"
  rm -rf "$work"
}

# rootfs_add_binary ROOTFS BINARY DEST: copies BINARY to ROOTFS/DEST, stripped of debug info, with
# exactly the shared libraries `ldd` says it loads (and the dynamic loader) at their own paths.
rootfs_add_binary() {
  local rootfs=$1 bin=$2 dest=$3 lib
  mkdir -p "$rootfs$(dirname "$dest")"
  objcopy --strip-debug "$bin" "$rootfs$dest"
  chmod 0755 "$rootfs$dest"
  for lib in $(ldd "$bin" | grep -oE '/[^ ]+' | sort -u); do
    mkdir -p "$rootfs$(dirname "$lib")"
    cp -L "$lib" "$rootfs$lib"
  done
}

# rootfs_add_user ROOTFS UID NAME: /etc/passwd and /etc/group with root and one non-root user,
# and a world-writable sticky /tmp (an emptyDir is mounted there when the root is read-only).
rootfs_add_user() {
  local rootfs=$1 uid=$2 name=$3
  mkdir -p "$rootfs/etc" "$rootfs/tmp"
  chmod 1777 "$rootfs/tmp"
  printf 'root:x:0:0:root:/root:/sbin/nologin\n%s:x:%s:%s:%s:/home/%s:/sbin/nologin\n' "$name" "$uid" "$uid" "$name" "$name" > "$rootfs/etc/passwd"
  printf 'root:x:0:\n%s:x:%s:\n' "$name" "$uid" > "$rootfs/etc/group"
}
