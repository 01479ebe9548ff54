#!/usr/bin/env bash
# Builds the real node's Go parts into $OUT: kubelet and kube-proxy (Kubernetes $K8S_VERSION, the
# control plane's method: a throwaway module that mirrors k8s.io/kubernetes' staging replaces)
# and crictl ($CRICTL_VERSION, to remove pods through the CRI when the environment goes down).
set -euo pipefail
: "${K8S_VERSION:?}" "${CRICTL_VERSION:?}" "${OUT:?}"
STAGING=v0.${K8S_VERSION#v1.}
mkdir -p "$OUT"
export CGO_ENABLED=0 GOFLAGS="-mod=mod -modcacherw" GOTOOLCHAIN=local

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
go mod init local/k8snode >/dev/null 2>&1
KMOD=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
for m in $(sed -n 's#^[[:space:]]*\(k8s.io/[A-Za-z0-9._-]*\) => \./staging/.*#\1#p' "$KMOD"); do
  go mod edit -replace="$m=$m@$STAGING"
done
for c in kubelet kube-proxy; do go get -tool "k8s.io/kubernetes/cmd/$c@$K8S_VERSION"; done
go mod tidy
MINOR=$(echo "$K8S_VERSION" | cut -d. -f2)
V=k8s.io/component-base/version; C=k8s.io/client-go/pkg/version
LDF="-s -w -X $V.gitVersion=$K8S_VERSION -X $V.gitMajor=1 -X $V.gitMinor=$MINOR -X $V.gitTreeState=clean \
 -X $V.buildDate=1970-01-01T00:00:00Z -X $C.gitVersion=$K8S_VERSION -X $C.gitMajor=1 -X $C.gitMinor=$MINOR"
go build -trimpath -ldflags "$LDF" -o "$OUT/" k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy

# crictl has no replace directives: a plain go install.
GOBIN="$OUT" go install -trimpath \
  -ldflags "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=$CRICTL_VERSION" \
  "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION"
"$OUT/kubelet" --version
"$OUT/kube-proxy" --version
"$OUT/crictl" --version
