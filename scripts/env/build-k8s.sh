#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager, kube-scheduler, kubectl (Kubernetes $K8S_VERSION)
# and etcd ($ETCD_VERSION) from the Go module proxy into $OUT. k8s.io/kubernetes cannot be
# `go install`ed (its go.mod replaces every staging module with ./staging/...), so a throwaway
# module mirrors those replaces with the published v0.<minor>.<patch> staging tags.
set -euo pipefail
: "${K8S_VERSION:?}" "${ETCD_VERSION:?}" "${OUT:?}"
STAGING=v0.${K8S_VERSION#v1.}
mkdir -p "$OUT"
export CGO_ENABLED=0 GOFLAGS="-mod=mod -modcacherw" GOTOOLCHAIN=local

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
go mod init local/k8sbin >/dev/null 2>&1
KMOD=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
for m in $(sed -n 's#^[[:space:]]*\(k8s.io/[A-Za-z0-9._-]*\) => \./staging/.*#\1#p' "$KMOD"); do
  go mod edit -replace="$m=$m@$STAGING"
done
for c in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
  go get -tool "k8s.io/kubernetes/cmd/$c@$K8S_VERSION"
done
go mod tidy
MINOR=$(echo "$K8S_VERSION" | cut -d. -f2)
V=k8s.io/component-base/version; C=k8s.io/client-go/pkg/version
LDF="-s -w -X $V.gitVersion=$K8S_VERSION -X $V.gitMajor=1 -X $V.gitMinor=$MINOR -X $V.gitTreeState=clean \
 -X $V.buildDate=1970-01-01T00:00:00Z -X $C.gitVersion=$K8S_VERSION -X $C.gitMajor=1 -X $C.gitMinor=$MINOR"
go build -trimpath -ldflags "$LDF" -o "$OUT/" \
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl

# etcd: go.etcd.io/etcd/server/v3 has replace directives too, so build a three-line main.
mkdir etcd && cd etcd && go mod init local/etcd >/dev/null 2>&1
printf 'package main\n\nimport (\n\t"os"\n\n\t"go.etcd.io/etcd/server/v3/etcdmain"\n)\n\nfunc main() { etcdmain.Main(os.Args) }\n' > main.go
go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
go mod tidy
go build -trimpath -ldflags "-s -w" -o "$OUT/etcd" .
"$OUT/kube-apiserver" --version
"$OUT/etcd" --version | head -1
