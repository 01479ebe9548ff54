#!/usr/bin/env bash
# Builds CoreDNS ($COREDNS_VERSION) into $OUT: the cluster DNS the real node's pods resolve
# Service names with. Only the plugins node.sh's Corefile uses are compiled in (CoreDNS's own
# way to build a custom server: a main that imports coremain and the chosen plugins); the full
# server links every cloud provider's SDK and took four times as long to build.
set -euo pipefail
: "${COREDNS_VERSION:?}" "${OUT:?}"
mkdir -p "$OUT"
. "$(dirname "$0")/go-module.sh"
throwaway_module coredns
cat > main.go <<'GO'
// CoreDNS with the plugins the local node's Corefile uses, in CoreDNS's own plugin order.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/template"
)

func init() {
	dnsserver.Directives = []string{"bind", "errors", "cache", "template", "kubernetes"}
}

func main() { coremain.Run() }
GO
go get "github.com/coredns/coredns@$COREDNS_VERSION"
go mod tidy
go build -trimpath -ldflags "-s -w -X github.com/coredns/coredns/coremain.GitCommit=$COREDNS_VERSION" \
  -o "$OUT/coredns" .
"$OUT/coredns" -version
"$OUT/coredns" -plugins | grep -qx kubernetes
