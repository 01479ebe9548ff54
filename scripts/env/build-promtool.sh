#!/usr/bin/env bash
# Builds promtool (Prometheus $PROMTOOL_VERSION, the Go module's v0.3xx tag) into $OUT: `make
# test` checks the chart's alert rules with `promtool check rules` and `promtool test rules`.
# Built through a throwaway module (`go get -tool`), since Prometheus's go.mod has directives
# `go install` refuses.
set -euo pipefail
: "${PROMTOOL_VERSION:?}" "${OUT:?}"
mkdir -p "$OUT"
export CGO_ENABLED=0 GOFLAGS="-mod=mod -modcacherw" GOTOOLCHAIN=local

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
go mod init local/promtool >/dev/null 2>&1
go get -tool "github.com/prometheus/prometheus/cmd/promtool@$PROMTOOL_VERSION"
go mod tidy
go build -trimpath -ldflags "-s -w -X github.com/prometheus/common/version.Version=$PROMTOOL_VERSION" \
  -o "$OUT/promtool" github.com/prometheus/prometheus/cmd/promtool
"$OUT/promtool" --version | head -1
