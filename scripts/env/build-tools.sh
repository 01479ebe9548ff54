#!/usr/bin/env bash
# Builds KWOK (fake nodes that run pods "Ready") and helm from the Go module proxy into $OUT.
# Neither has replace directives, so plain `go install` works.
set -euo pipefail
: "${KWOK_VERSION:?}" "${HELM_VERSION:?}" "${K8S_VERSION:?}" "${OUT:?}"
mkdir -p "$OUT"
export CGO_ENABLED=0 GOBIN="$OUT" GOFLAGS="-mod=mod -modcacherw" GOTOOLCHAIN=local
go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
# The ldflags make `helm version` honest and make offline `helm template`/`lint` assume our
# Kubernetes minor version instead of v1.20.
MINOR=$(echo "$K8S_VERSION" | cut -d. -f2)
go install -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION \
  -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$MINOR \
  -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$MINOR" \
  "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
# kwok run by itself (not through kwokctl) has no stages: ship the upstream "fast" node and pod
# stages, plus node heartbeats through Leases, from the module we just built.
stages=$(go env GOMODCACHE)/sigs.k8s.io/kwok@$KWOK_VERSION/kustomize/stage
for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
  pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
  printf -- '---\n'; cat "$stages/$f"
done > "$OUT/kwok-stages.yaml"
"$OUT/kwok" --version
"$OUT/helm" version --short
