#!/usr/bin/env bash
# Builds CoreDNS ($COREDNS_VERSION) into $OUT: the cluster DNS the real node's pods resolve
# Service names with. Its go.mod has no replace directives, so plain `go install` works.
set -euo pipefail
: "${COREDNS_VERSION:?}" "${OUT:?}"
mkdir -p "$OUT"
export CGO_ENABLED=0 GOBIN="$OUT" GOFLAGS="-mod=mod -modcacherw" GOTOOLCHAIN=local
go install -trimpath -ldflags "-s -w -X github.com/coredns/coredns/coremain.GitCommit=$COREDNS_VERSION" \
  "github.com/coredns/coredns@$COREDNS_VERSION"
"$OUT/coredns" -version
