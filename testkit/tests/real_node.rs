//! The real node: pods pinned to `ferry-node` really run (containerd, runc, the CNI bridge), so
//! what KWOK would wave through — a secret key that does not exist, a probe on the wrong port, a
//! binary that writes to a read-only root, a sidecar that starts late — fails here as on a real
//! cluster.

use std::time::Duration;

use ferry_testkit::{
    TempNamespace, TempTopic, container_log, ferry_image, pod_ready, require_env, require_node,
    wait_for_pod,
};
use k8s_openapi::api::core::v1::{Node, Pod, Secret, Service};
use kube::{Api, api::PostParams};
use rdkafka::producer::{FutureProducer, FutureRecord};

/// The securityContext every Ferry container has: what a `restricted` namespace demands.
fn hardened() -> serde_json::Value {
    serde_json::json!({
        "runAsNonRoot": true,
        "readOnlyRootFilesystem": true,
        "allowPrivilegeEscalation": false,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"}
    })
}

#[tokio::test]
async fn the_real_node_is_ready_and_runs_containerd() {
    let env = require_env!();
    let real = require_node!(env);
    let nodes: Api<Node> = Api::all(env.kube_client().await.expect("client"));
    let node = nodes.get(real.name()).await.expect("the node registered");
    let status = node.status.expect("node status");
    let ready = status
        .conditions
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .expect("a Ready condition");
    assert_eq!(ready.status, "True", "node not Ready: {ready:?}");
    let info = status.node_info.expect("node info");
    assert!(
        info.container_runtime_version.starts_with("containerd://"),
        "a real runtime, not KWOK: {}",
        info.container_runtime_version
    );
    assert!(
        info.kubelet_version.starts_with("v1."),
        "{}",
        info.kubelet_version
    );
    let address = status
        .addresses
        .unwrap_or_default()
        .into_iter()
        .find(|a| a.type_ == "InternalIP")
        .expect("an InternalIP");
    assert_eq!(address.address, real.ip());
    let taints = node.spec.and_then(|s| s.taints).unwrap_or_default();
    assert!(
        taints.iter().any(|t| t.effect == "NoSchedule"),
        "tainted, so pods that do not ask for it stay on the KWOK nodes: {taints:?}"
    );
}

/// A pod hardened the way Ferry's are, with env from a Secret and a native sidecar: the
/// sidecar's startup probe must pass before the app starts, the app's probes must pass, and
/// both logs come back through the kubelet.
#[tokio::test]
async fn a_hardened_pod_with_a_native_sidecar_runs_on_the_real_node() {
    let env = require_env!();
    let real = require_node!(env);
    let namespace = TempNamespace::create(env).await.expect("namespace");
    let secrets: Api<Secret> = Api::namespaced(namespace.client(), namespace.name());
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "app-secret"},
        "stringData": {"token": "s3cret-from-the-api"}
    }))
    .expect("a valid Secret");
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .expect("secret");

    // The sidecar marks itself started in a shared volume; its startup probe waits for the
    // mark, and the app records whether the mark was there when it started. Shells as PID 1
    // ignore SIGTERM, hence the traps (or deletion waits the whole grace period).
    let sidecar_script = "trap 'exit 0' TERM; echo sidecar started as $(id -u); \
        touch /shared/sidecar-started; while true; do sleep 1; done";
    let app_script = "trap 'exit 0' TERM; \
        if test -f /shared/sidecar-started; then echo sidecar-first=yes; else echo sidecar-first=no; fi; \
        echo token=$APP_TOKEN uid=$(id -u); \
        if touch /root-write 2>/dev/null; then echo root=writable; else echo root=read-only; fi; \
        echo ok > /www/healthz; httpd -f -p 8080 -h /www & wait";
    let mut pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "hardened"},
        "spec": {
            "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532},
            "terminationGracePeriodSeconds": 5,
            "volumes": [{"name": "shared", "emptyDir": {}}, {"name": "www", "emptyDir": {}}],
            "initContainers": [{
                "name": "sidecar",
                "image": real.testbox_image(),
                "imagePullPolicy": "Never",
                "restartPolicy": "Always",
                "command": ["sh", "-c", sidecar_script],
                "startupProbe": {"exec": {"command": ["test", "-f", "/shared/sidecar-started"]},
                                 "periodSeconds": 1, "failureThreshold": 60},
                "securityContext": hardened(),
                "volumeMounts": [{"name": "shared", "mountPath": "/shared"}]
            }],
            "containers": [{
                "name": "app",
                "image": real.testbox_image(),
                "imagePullPolicy": "Never",
                "command": ["sh", "-c", app_script],
                "env": [{"name": "APP_TOKEN",
                         "valueFrom": {"secretKeyRef": {"name": "app-secret", "key": "token"}}}],
                "ports": [{"containerPort": 8080}],
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1},
                "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 2},
                "securityContext": hardened(),
                "volumeMounts": [{"name": "shared", "mountPath": "/shared"},
                                 {"name": "www", "mountPath": "/www"}]
            }]
        }
    }))
    .expect("a valid Pod");
    real.pin(pod.spec.as_mut().expect("spec"));
    let pods: Api<Pod> = Api::namespaced(namespace.client(), namespace.name());
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("the API server accepts the pod");

    let pod = wait_for_pod(&pods, "hardened", "Ready", pod_ready)
        .await
        .expect("the pod runs and its probes pass");
    assert_eq!(
        pod.spec.and_then(|s| s.node_name).as_deref(),
        Some(real.name())
    );
    let status = pod.status.expect("status");
    assert!(
        status.pod_ip.is_some_and(|ip| ip.starts_with("10.")),
        "an address on the pods' bridge"
    );
    let restarts: i32 = status
        .container_statuses
        .iter()
        .flatten()
        .chain(status.init_container_statuses.iter().flatten())
        .map(|c| c.restart_count)
        .sum();
    assert_eq!(restarts, 0, "no probe failed and nothing crashed");

    let app = container_log(&pods, "hardened", "app")
        .await
        .expect("app log");
    assert!(app.contains("sidecar-first=yes"), "app log: {app}");
    assert!(
        app.contains("token=s3cret-from-the-api uid=65532"),
        "app log: {app}"
    );
    assert!(app.contains("root=read-only"), "app log: {app}");
    let sidecar = container_log(&pods, "hardened", "sidecar")
        .await
        .expect("sidecar log");
    assert!(
        sidecar.contains("sidecar started as 65532"),
        "sidecar log: {sidecar}"
    );
}

/// The images `make images` builds run on the node as their non-root user with a read-only
/// root: a binary missing a shared library, or needing a writable root, fails here.
#[tokio::test]
async fn ferrys_images_run_on_the_real_node() {
    let env = require_env!();
    let real = require_node!(env);
    let namespace = TempNamespace::create(env).await.expect("namespace");
    let pods: Api<Pod> = Api::namespaced(namespace.client(), namespace.name());
    for binary in ["ferry-sidecar", "ferry-operator"] {
        let mut pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": binary},
            "spec": {
                "restartPolicy": "Never",
                "containers": [{
                    "name": "main",
                    "image": ferry_image(binary),
                    "imagePullPolicy": "Never",
                    "args": ["--version"],
                    "securityContext": hardened()
                }]
            }
        }))
        .expect("a valid Pod");
        real.pin(pod.spec.as_mut().expect("spec"));
        pods.create(&PostParams::default(), &pod)
            .await
            .expect("the API server accepts the pod");
    }
    for binary in ["ferry-sidecar", "ferry-operator"] {
        wait_for_pod(&pods, binary, "Succeeded", |p| {
            p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded")
        })
        .await
        .unwrap_or_else(|e| panic!("{binary}'s image runs (did `make images` run?): {e:#}"));
        let log = container_log(&pods, binary, "main").await.expect("log");
        assert!(
            log.contains(&format!("{binary} {}", env!("CARGO_PKG_VERSION"))),
            "{binary} --version printed {log:?}"
        );
    }
}

/// A Service's DNS name resolves from a pod on the real node (CoreDNS) and its ClusterIP
/// reaches the pod behind it (kube-proxy), as a worker's delivery to
/// `http://<service>.<namespace>.svc:<port>` needs.
#[tokio::test]
async fn a_service_name_resolves_and_reaches_a_pod_from_a_pod() {
    let env = require_env!();
    let real = require_node!(env);
    let namespace = TempNamespace::create(env).await.expect("namespace");
    let ns = namespace.name();
    let pods: Api<Pod> = Api::namespaced(namespace.client(), ns);
    let services: Api<Service> = Api::namespaced(namespace.client(), ns);

    let mut web: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {
            "terminationGracePeriodSeconds": 5,
            "volumes": [{"name": "www", "emptyDir": {}}],
            "containers": [{
                "name": "web",
                "image": real.testbox_image(),
                "imagePullPolicy": "Never",
                "command": ["sh", "-c", "trap 'exit 0' TERM; echo hello-from-web > /www/index.html; \
                    httpd -f -p 8080 -h /www & wait"],
                "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
                "securityContext": hardened(),
                "volumeMounts": [{"name": "www", "mountPath": "/www"}]
            }]
        }
    }))
    .expect("a valid Pod");
    real.pin(web.spec.as_mut().expect("spec"));
    pods.create(&PostParams::default(), &web)
        .await
        .expect("web pod");
    let service: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}
    }))
    .expect("a valid Service");
    let service = services
        .create(&PostParams::default(), &service)
        .await
        .expect("service");
    let cluster_ip = service
        .spec
        .and_then(|s| s.cluster_ip)
        .expect("a ClusterIP");
    wait_for_pod(&pods, "web", "Ready", pod_ready)
        .await
        .expect("web serves");

    // Busybox's own resolver (nslookup): its static glibc cannot load NSS for wget's lookups
    // (wget by name crashes).
    // Retries: the Service's endpoints reach kube-proxy's rules a moment after the pod is Ready.
    let client_script = format!(
        "for i in $(seq 1 60); do \
           ip=$(nslookup web.{ns}.svc.cluster.local | sed -n 's/^Address: //p' | tail -n 1); \
           out=$(printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 $ip 80); \
           case $out in *hello-from-web*) echo \"resolved $ip got hello-from-web\"; break;; esac; \
           sleep 1; \
         done; true"
    );
    let mut client: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "client"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{
                "name": "client",
                "image": real.testbox_image(),
                "imagePullPolicy": "Never",
                "command": ["sh", "-c", client_script],
                "securityContext": hardened()
            }]
        }
    }))
    .expect("a valid Pod");
    real.pin(client.spec.as_mut().expect("spec"));
    pods.create(&PostParams::default(), &client)
        .await
        .expect("client pod");
    wait_for_pod(&pods, "client", "Succeeded", |p| {
        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded")
    })
    .await
    .expect("the client ran");
    let log = container_log(&pods, "client", "client")
        .await
        .expect("client log");
    assert!(
        log.contains(&format!("resolved {cluster_ip} got hello-from-web")),
        "the name resolves to the ClusterIP {cluster_ip}, which reaches the pod: {log}"
    );
}

/// The ferry-sidecar image as a worker pod on the node: it consumes from Kafka through the
/// pods' listener, with its password from a Secret, and delivers to another pod through the
/// Service's DNS name.
#[tokio::test]
async fn a_worker_pod_delivers_from_kafka_to_a_pod_behind_a_service() {
    let env = require_env!();
    let real = require_node!(env);
    let namespace = TempNamespace::create(env).await.expect("namespace");
    let ns = namespace.name();
    let topic = TempTopic::create(env, 1).await.expect("topic");
    let dead_letter = TempTopic::create(env, 1).await.expect("dead-letter topic");
    let pods: Api<Pod> = Api::namespaced(namespace.client(), ns);

    // The target: busybox httpd whose CGI prints each request body to the container's log.
    let cgi = "#!/bin/sh\nbody=$(head -c \"$CONTENT_LENGTH\")\necho \"received $body\" > /proc/1/fd/1\n\
        printf 'Status: 200 OK\\r\\nContent-Type: text/plain\\r\\n\\r\\nok'\n";
    let mut orders: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "orders", "labels": {"app": "orders"}},
        "spec": {
            "terminationGracePeriodSeconds": 5,
            "volumes": [{"name": "www", "emptyDir": {}}],
            "containers": [{
                "name": "orders",
                "image": real.testbox_image(),
                "imagePullPolicy": "Never",
                "command": ["sh", "-c", "trap 'exit 0' TERM; mkdir -p /www/cgi-bin; \
                    printf '%s' \"$CGI\" > /www/cgi-bin/events; chmod +x /www/cgi-bin/events; \
                    httpd -f -p 8080 -h /www & wait"],
                "env": [{"name": "CGI", "value": cgi}],
                "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
                "securityContext": hardened(),
                "volumeMounts": [{"name": "www", "mountPath": "/www"}]
            }]
        }
    }))
    .expect("a valid Pod");
    real.pin(orders.spec.as_mut().expect("spec"));
    pods.create(&PostParams::default(), &orders)
        .await
        .expect("orders pod");
    let services: Api<Service> = Api::namespaced(namespace.client(), ns);
    let service: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "orders"},
        "spec": {"selector": {"app": "orders"}, "ports": [{"port": 80, "targetPort": 8080}]}
    }))
    .expect("a valid Service");
    services
        .create(&PostParams::default(), &service)
        .await
        .expect("service");

    let secrets: Api<Secret> = Api::namespaced(namespace.client(), ns);
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "kafka"},
        "stringData": {"password": env.var("FERRY_KAFKA_PASSWORD").expect("admin password")}
    }))
    .expect("a valid Secret");
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .expect("secret");
    let mut worker: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "worker"},
        "spec": {
            "terminationGracePeriodSeconds": 5,
            "containers": [{
                "name": "worker",
                "image": ferry_image("ferry-sidecar"),
                "imagePullPolicy": "Never",
                "args": ["worker", format!("--topics={}", topic.name()), "--group=orders",
                         format!("--target-url=http://orders.{ns}.svc:80/cgi-bin/events"),
                         format!("--dead-letter-topic={}", dead_letter.name()),
                         // Until kube-proxy has the Service's endpoints, connections are refused.
                         "--retry-attempts=30"],
                "env": [
                    {"name": "FERRY_KAFKA_BOOTSTRAP", "value": real.kafka_bootstrap()},
                    {"name": "FERRY_KAFKA_SECURITY_PROTOCOL", "value": "SASL_PLAINTEXT"},
                    {"name": "FERRY_KAFKA_SASL_MECHANISM", "value": "SCRAM-SHA-512"},
                    {"name": "FERRY_KAFKA_USERNAME", "value": env.var("FERRY_KAFKA_USERNAME").expect("admin")},
                    {"name": "FERRY_KAFKA_PASSWORD",
                     "valueFrom": {"secretKeyRef": {"name": "kafka", "key": "password"}}}
                ],
                "securityContext": hardened()
            }]
        }
    }))
    .expect("a valid Pod");
    real.pin(worker.spec.as_mut().expect("spec"));
    pods.create(&PostParams::default(), &worker)
        .await
        .expect("worker pod");

    wait_for_pod(&pods, "orders", "Ready", pod_ready)
        .await
        .expect("orders serves");
    let producer: FutureProducer = env.kafka_config().create().expect("producer");
    let envelope = serde_json::json!({
        "schema": "test.v1", "event": "order.placed", "id": "pod-1", "ts": 1_700_000_000,
        "key": "o-1", "data": {"order": "o-1", "via": "a-real-pod"}, "headers": {}
    })
    .to_string();
    producer
        .send(
            FutureRecord::to(topic.name()).key("o-1").payload(&envelope),
            Duration::from_secs(20),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("produced");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        let log = container_log(&pods, "orders", "orders")
            .await
            .unwrap_or_default();
        if log.contains(r#""via":"a-real-pod""#) {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            let worker_log = container_log(&pods, "worker", "worker")
                .await
                .unwrap_or_else(|e| format!("{e:#}"));
            panic!("nothing delivered after 180 s; orders log: {log}\nworker log: {worker_log}");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
