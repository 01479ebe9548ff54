#!/usr/bin/env bash
# Builds promtool (Prometheus $PROMTOOL_VERSION, the Go module's v0.3xx tag) into $OUT: `make
# test` checks the chart's alert rules with `promtool check rules` and `promtool test rules`.
# Built through a throwaway module (`go get -tool`), as the control plane is.
set -euo pipefail
: "${PROMTOOL_VERSION:?}" "${OUT:?}"
mkdir -p "$OUT"
. "$(dirname "$0")/go-module.sh"
throwaway_module promtool
go get -tool "github.com/prometheus/prometheus/cmd/promtool@$PROMTOOL_VERSION"
go mod tidy
go build -trimpath -ldflags "-s -w -X github.com/prometheus/common/version.Version=$PROMTOOL_VERSION" \
  -o "$OUT/promtool" github.com/prometheus/prometheus/cmd/promtool
"$OUT/promtool" --version | head -1
