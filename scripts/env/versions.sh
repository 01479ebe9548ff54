# Versions of everything the local environment runs; the cache is keyed by them, so bumping one
# here rebuilds just that part on the next `make env-up`.
K8S_VERSION=${K8S_VERSION:-v1.36.3}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
KWOK_VERSION=${KWOK_VERSION:-v0.8.0}
HELM_VERSION=${HELM_VERSION:-v3.22.0}
KAFKA_VERSION=${KAFKA_VERSION:-4.4.0}
# The real node: kubelet and kube-proxy are built at $K8S_VERSION; containerd, runc and the CNI
# plugins come from Debian (install.sh).
CRICTL_VERSION=${CRICTL_VERSION:-v1.36.0}
COREDNS_VERSION=${COREDNS_VERSION:-v1.14.7}
# promtool checks the chart's alert rules (Prometheus 3's Go module tags are v0.3xx).
PROMTOOL_VERSION=${PROMTOOL_VERSION:-v0.316.0}
