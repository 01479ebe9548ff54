//! End to end on real pods (issue #15): the operator, run as a host process like the other
//! operator tests, reconciles an EventTopic and an EventConsumer and answers the API server's
//! admission calls; the worker Deployment it writes and the relay its webhook injects run on
//! the real node `ferry-node` (containerd, the CNI bridge, CoreDNS, kube-proxy). A row written
//! to the service's outbox table (the host's PostgreSQL, reached from the pod at the node's
//! address) is published by the injected relay, consumed by the worker pod and delivered to
//! another pod through its Service's DNS name; a worker pod force-deleted mid-stream loses
//! nothing.
//!
//! Here, not in testkit: the operator binary (`CARGO_BIN_EXE_ferry-operator`) and the CRD
//! installer (`support`) live with the operator's tests. The pods run the images `make images`
//! built from this workspace (`make test` packs them right after building the tests).
//!
//! Every pod of the test namespace lands on the real node through the namespace's
//! annotations ([`RealNode::claim`]): the worker Deployment's pod template is the operator's,
//! exactly as a cluster would run it, and the API server adds only the scheduling.

mod support;

use std::{collections::BTreeSet, time::Duration};

use ferry_operator::{
    api::ConditionStatus,
    consumer::deployment::CONSUMER_LABEL,
    webhook::{annotations, registration, sidecar},
};
use ferry_testkit::{
    OUTBOX_SQL, RealNode, TempNamespace, TempSchema, TestEnv, container_log, eventually,
    ferry_image, free_port, pod_ready, require_env, require_node, unique_name, wait_for_pod,
};
use k8s_openapi::api::{
    admissionregistration::v1::MutatingWebhookConfiguration,
    core::v1::{Pod, Secret, Service, ServiceAccount},
};
use kube::{
    Api,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use support::{MANAGER, Operator, install_crds};

/// Rows the service writes: half before the worker pod is killed, half after.
const ROWS: usize = 120;
/// Deliveries seen before the worker pod is killed, so it dies with work in hand.
const KILL_AFTER: usize = 10;
/// A cold operator starts, takes its Lease, makes its certificate, creates the topics, the
/// credentials and the Deployment, and a pod starts on the node, on a loaded 2-core CI.
const CONVERGE: Duration = Duration::from_secs(180);
/// Every row reaches the sink within this, including a consumer-group rebalance that waits out
/// the killed member's session (45 s, librdkafka's default `session.timeout.ms`).
const DELIVERED: Duration = Duration::from_secs(300);
/// How often the sink's log is read while waiting for deliveries.
const LOG_POLL: Duration = Duration::from_millis(500);
/// The sink's port (non-root: above 1024).
const SINK_PORT: i32 = 8000;

/// The sink's CGI: records each delivery's CloudEvent id (busybox httpd passes request
/// headers as `HTTP_*`) in the container's log and answers 200.
const SINK_CGI: &str = "#!/bin/sh\nhead -c \"$CONTENT_LENGTH\" > /dev/null\n\
    echo \"received id=$HTTP_CE_ID\" > /proc/1/fd/1\n\
    printf 'Status: 200 OK\\r\\nContent-Type: text/plain\\r\\n\\r\\nok'\n";

#[tokio::test]
async fn an_outbox_row_travels_relay_pod_to_worker_pod_to_a_service_and_a_killed_worker_loses_nothing()
 {
    let env = require_env!();
    let real = require_node!(env);
    let ns = TempNamespace::create(env).await.expect("namespace");
    real.claim(&ns)
        .await
        .expect("the namespace's pods go to the real node");
    install_crds(&ns.client()).await.expect("CRDs");
    let name = ns.name().to_owned();
    let pods: Api<Pod> = Api::namespaced(ns.client(), &name);
    for account in ["order-service", "notify"] {
        Api::<ServiceAccount>::namespaced(ns.client(), &name)
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": account}})).expect("sa"),
            )
            .await
            .expect("service account");
    }

    // The HTTP endpoint, a pod behind a Service.
    sink(&ns, &real).await;

    // The service's database: an outbox table in a schema of its own, its DSN (the node's
    // address of the host's PostgreSQL) in a Secret.
    let schema = TempSchema::create(env).await.expect("schema");
    let db = schema.connect().await.expect("connect");
    db.batch_execute(OUTBOX_SQL).await.expect("outbox table");
    Api::<Secret>::namespaced(ns.client(), &name)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "order-db"},
                "stringData": {annotations::DEFAULT_DATABASE_KEY: real.schema_url(&schema)}
            }))
            .expect("secret"),
        )
        .await
        .expect("DSN Secret");

    let operator = OperatorWithWebhook::start(env, &ns, &real).await;

    let topic = format!("{name}.orders");
    apply(
        &ns,
        "EventTopic",
        "orders",
        json!({"topicName": topic, "partitions": 3, "replicationFactor": 1,
               "deletionPolicy": "Delete",
               "producers": [{"serviceAccount": "order-service"}]}),
    )
    .await;
    apply(
        &ns,
        "EventConsumer",
        "notify",
        json!({"topics": ["orders"], "serviceAccount": "notify",
               "delivery": {"http": {"service": {"name": "sink", "port": SINK_PORT,
                                                 "path": "/cgi-bin/events"}}},
               // Deliveries refused while kube-proxy learns the sink's endpoints are retried,
               // never dead-lettered.
               "retry": {"attempts": 100, "backoff": {"initial": "200ms", "max": "2s"}},
               // The worker pod reaches the host's PostgreSQL too, its DSN by secretKeyRef.
               "idempotency": {"enabled": true,
                               "databaseSecretRef": {"name": "order-db",
                                                     "key": annotations::DEFAULT_DATABASE_KEY}}}),
    )
    .await;
    wait_topic_ready(&ns).await;

    // The service's pod: opted in, its relay injected by the operator's webhook. Its
    // credential Secret comes from the identity controller.
    let secrets: Api<Secret> = Api::namespaced(ns.client(), &name);
    eventually("the producer's credential", CONVERGE, || async {
        secrets
            .get_opt("ferry-kafka-order-service")
            .await
            .ok()
            .flatten()
    })
    .await
    .expect("the identity controller writes ferry-kafka-order-service");
    let service: Pod = serde_json::from_value(json!({
        "metadata": {
            "name": "order",
            "labels": {registration::INJECT_LABEL: registration::INJECT_ENABLED},
            "annotations": {annotations::DATABASE_SECRET: "order-db",
                            annotations::TABLE: "outbox"}
        },
        "spec": {
            "serviceAccountName": "order-service",
            "terminationGracePeriodSeconds": 5,
            "containers": [{
                "name": "web",
                "image": real.testbox_image(),
                "imagePullPolicy": "Never",
                // The service itself listens on the relay's default metrics port, so the relay
                // must move (the webhook picks the next free port) and its probes follow it.
                "command": ["sh", "-c", format!("trap 'exit 0' TERM; \
                    httpd -f -p {} -h /bin & wait", sidecar::RELAY_METRICS_PORT)],
                "ports": [{"containerPort": sidecar::RELAY_METRICS_PORT}],
                "readinessProbe": {"tcpSocket": {"port": sidecar::RELAY_METRICS_PORT},
                                   "periodSeconds": 1},
                "securityContext": hardened()
            }]
        }
    }))
    .expect("a pod");
    let admitted = pods
        .create(&PostParams::default(), &service)
        .await
        .expect("the service's pod is admitted");
    let relays: Vec<_> = admitted
        .spec
        .iter()
        .flat_map(|s| s.init_containers.iter().flatten())
        .filter(|c| c.name == sidecar::RELAY_CONTAINER)
        .collect();
    assert_eq!(
        relays.len(),
        1,
        "the webhook injected the relay: {admitted:?}"
    );
    let relay_port = relays[0].ports.as_ref().map(|p| p[0].container_port);
    assert_eq!(relay_port, Some(sidecar::RELAY_METRICS_PORT + 1));
    let service = match wait_for_pod(&pods, "order", "Ready", pod_ready).await {
        Ok(pod) => pod,
        Err(e) => panic!("{e:#}\n{}", logs(&pods, "order").await),
    };
    assert_on_node(&service, &real);

    let worker = ready_worker(&pods, &real, None).await;
    let worker_name = worker.metadata.name.clone().expect("name");

    // Rows written at a steady pace, as the service would; the second half only once the
    // worker pod is gone.
    let (killed_tx, mut killed_rx) = tokio::sync::oneshot::channel::<()>();
    let writer = tokio::spawn({
        let topic = topic.clone();
        async move {
            for i in 0..ROWS {
                if i == ROWS / 2 {
                    let _ = (&mut killed_rx).await;
                }
                db.execute(
                    "INSERT INTO outbox (topic, key, payload) VALUES ($1, to_jsonb($2::text), \
                     jsonb_build_object('schema', 'shop.v1', 'event', 'order.created', \
                     'id', $3::text, 'ts', 1, 'key', $2::text, \
                     'data', jsonb_build_object('n', $4::int)))",
                    &[
                        &topic,
                        &format!("o-{}", i % 8),
                        &event_id(i),
                        &i32::try_from(i).expect("small"),
                    ],
                )
                .await
                .expect("an outbox row");
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
    });

    let first = eventually("the first deliveries", DELIVERED, || async {
        // Each read is the sink's whole log, through the API server and the kubelet.
        tokio::time::sleep(LOG_POLL).await;
        let seen = delivered(&pods).await;
        (seen.len() >= KILL_AFTER).then_some(seen)
    })
    .await;
    if let Err(e) = first {
        panic!("{e:#}\n{}", diagnostics(&pods).await);
    }
    // What `kubectl delete pod --grace-period=0 --force` sends.
    pods.delete(
        &worker_name,
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::default()
        },
    )
    .await
    .expect("the worker pod is force-deleted");
    let at_kill = delivered(&pods).await.len();
    let _ = killed_tx.send(());
    eprintln!("worker pod {worker_name} force-deleted after {at_kill} of {ROWS} deliveries");

    let replacement = ready_worker(&pods, &real, Some(&worker_name)).await;
    writer.await.expect("every row written");
    let all = eventually("every row delivered", DELIVERED, || async {
        // Each read is the sink's whole log, through the API server and the kubelet.
        tokio::time::sleep(LOG_POLL).await;
        let seen = delivered(&pods).await;
        (seen.len() >= ROWS).then_some(seen)
    })
    .await;
    let seen = match all {
        Ok(seen) => seen,
        Err(e) => panic!(
            "{e:#}: {} of {ROWS} delivered, missing {:?}\n{}",
            delivered(&pods).await.len(),
            missing(&delivered(&pods).await),
            diagnostics(&pods).await
        ),
    };
    assert!(missing(&seen).is_empty(), "{:?}", missing(&seen));
    // Nothing crashed or failed a probe: the relay, the service, and the replacement worker.
    let replacement_name = replacement.metadata.name.clone().expect("name");
    for pod_name in ["order", "sink", replacement_name.as_str()] {
        let pod = pods.get(pod_name).await.expect("pod");
        let restarts = restarts(&pod);
        assert!(
            restarts.iter().all(|(_, n)| *n == 0),
            "pod {pod_name}: {restarts:?}\n{}",
            logs(&pods, pod_name).await
        );
    }
    // Both ends went through the host's PostgreSQL from their pods: the relay marked every row
    // published, the workers recorded every id they delivered (idempotency).
    let db = schema.connect().await.expect("connect");
    let unpublished: i64 = db
        .query_one(
            "SELECT count(*) FROM outbox WHERE published_at IS NULL",
            &[],
        )
        .await
        .expect("outbox")
        .get(0);
    assert_eq!(unpublished, 0, "the relay marks what it published");
    let recorded: i64 = db
        .query_one(
            "SELECT count(DISTINCT event_id) FROM ferry_worker_delivered",
            &[],
        )
        .await
        .expect("the worker's idempotency table")
        .get(0);
    assert_eq!(recorded, i64::try_from(ROWS).expect("small"));
    assert_on_node(&replacement, &real);
    drop(operator);
}

/// The id of row `i`, the CloudEvent's `ce-id`.
fn event_id(i: usize) -> String {
    format!("evt-{i}")
}

/// Each container's restart count.
fn restarts(pod: &Pod) -> Vec<(String, i32)> {
    let status = pod.status.as_ref();
    status
        .and_then(|s| s.init_container_statuses.as_ref())
        .into_iter()
        .chain(status.and_then(|s| s.container_statuses.as_ref()))
        .flatten()
        .map(|c| (c.name.clone(), c.restart_count))
        .collect()
}

/// The ids not delivered.
fn missing(seen: &BTreeSet<String>) -> Vec<String> {
    (0..ROWS)
        .map(event_id)
        .filter(|id| !seen.contains(id))
        .collect()
}

/// The securityContext of every container the test writes itself.
fn hardened() -> Value {
    json!({
        "runAsNonRoot": true,
        "readOnlyRootFilesystem": true,
        "allowPrivilegeEscalation": false,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"}
    })
}

/// The sink pod (busybox httpd with [`SINK_CGI`]) and its Service `sink`, Ready.
async fn sink(ns: &TempNamespace, real: &RealNode) {
    let pods: Api<Pod> = Api::namespaced(ns.client(), ns.name());
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "sink", "labels": {"app": "sink"}},
        "spec": {
            "terminationGracePeriodSeconds": 5,
            "volumes": [{"name": "www", "emptyDir": {}}],
            "containers": [{
                "name": "sink",
                "image": real.testbox_image(),
                "imagePullPolicy": "Never",
                "command": ["sh", "-c", format!("trap 'exit 0' TERM; mkdir -p /www/cgi-bin; \
                    printf '%s' \"$CGI\" > /www/cgi-bin/events; chmod +x /www/cgi-bin/events; \
                    httpd -f -p {SINK_PORT} -h /www & wait")],
                "env": [{"name": "CGI", "value": SINK_CGI}],
                "ports": [{"containerPort": SINK_PORT}],
                "readinessProbe": {"tcpSocket": {"port": SINK_PORT}, "periodSeconds": 1},
                "securityContext": hardened(),
                "volumeMounts": [{"name": "www", "mountPath": "/www"}]
            }]
        }
    }))
    .expect("a pod");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("sink pod");
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "sink"},
        "spec": {"selector": {"app": "sink"}, "ports": [{"port": SINK_PORT}]}
    }))
    .expect("a Service");
    Api::<Service>::namespaced(ns.client(), ns.name())
        .create(&PostParams::default(), &service)
        .await
        .expect("sink Service");
    let pod = wait_for_pod(&pods, "sink", "Ready", pod_ready)
        .await
        .expect("the sink serves");
    assert_on_node(&pod, real);
}

/// The event ids the sink has received (its log, through the kubelet).
async fn delivered(pods: &Api<Pod>) -> BTreeSet<String> {
    container_log(pods, "sink", "sink")
        .await
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("received id="))
        .map(str::to_owned)
        .collect()
}

fn assert_on_node(pod: &Pod, real: &RealNode) {
    assert_eq!(
        pod.spec.as_ref().and_then(|s| s.node_name.as_deref()),
        Some(real.name()),
        "pod {:?} runs on the real node",
        pod.metadata.name
    );
}

/// Waits for a Ready worker pod other than `not` on the real node.
async fn ready_worker(pods: &Api<Pod>, real: &RealNode, not: Option<&str>) -> Pod {
    let selector = format!("{CONSUMER_LABEL}=notify");
    let found = eventually("a Ready worker pod", CONVERGE, || async {
        pods.list(&ListParams::default().labels(&selector))
            .await
            .ok()?
            .items
            .into_iter()
            .find(|p| {
                p.metadata.name.as_deref() != not
                    && p.metadata.deletion_timestamp.is_none()
                    && pod_ready(p)
            })
    })
    .await;
    match found {
        Ok(pod) => {
            assert_on_node(&pod, real);
            pod
        }
        Err(e) => panic!("{e:#}\n{}", diagnostics(pods).await),
    }
}

/// Server-side applies a Ferry resource.
async fn apply(ns: &TempNamespace, kind: &str, name: &str, spec: Value) {
    let plural = match kind {
        "EventTopic" => "eventtopics",
        _ => "eventconsumers",
    };
    let resource = kube::discovery::ApiResource {
        group: "ferry.dev".into(),
        version: "v1alpha1".into(),
        api_version: "ferry.dev/v1alpha1".into(),
        kind: kind.into(),
        plural: plural.into(),
    };
    let api: Api<kube::api::DynamicObject> =
        Api::namespaced_with(ns.client(), ns.name(), &resource);
    api.patch(
        name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(json!({"apiVersion": "ferry.dev/v1alpha1", "kind": kind,
                             "metadata": {"name": name}, "spec": spec})),
    )
    .await
    .unwrap_or_else(|e| panic!("{kind} {name} applied: {e}"));
}

async fn wait_topic_ready(ns: &TempNamespace) {
    let api = Api::<ferry_operator::api::EventTopic>::namespaced(ns.client(), ns.name());
    eventually("EventTopic orders Ready", CONVERGE, || async {
        let topic = api.get("orders").await.ok()?;
        topic
            .status?
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == ConditionStatus::True)
            .then_some(())
    })
    .await
    .expect("the EventTopic becomes Ready");
}

/// Every container's log and the pods' states, for a failure message.
async fn diagnostics(pods: &Api<Pod>) -> String {
    let mut out = String::new();
    let Ok(list) = pods.list(&ListParams::default()).await else {
        return out;
    };
    for pod in list.items {
        let name = pod.metadata.name.clone().unwrap_or_default();
        out.push_str(&format!(
            "--- pod {name} on {:?}: {:?}\n",
            pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            pod.status
        ));
        out.push_str(&logs(pods, &name).await);
    }
    out
}

/// The last lines of every container of pod `name`.
async fn logs(pods: &Api<Pod>, name: &str) -> String {
    let Ok(pod) = pods.get(name).await else {
        return String::new();
    };
    let mut out = String::new();
    let containers = pod
        .spec
        .iter()
        .flat_map(|s| s.init_containers.iter().flatten().chain(&s.containers))
        .map(|c| c.name.clone())
        .collect::<Vec<_>>();
    for container in containers {
        let log = container_log(pods, name, &container)
            .await
            .unwrap_or_else(|e| format!("{e:#}"));
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        out.push_str(&format!("--- {name}/{container}:\n"));
        for line in tail.into_iter().rev() {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The operator watching the namespace, its webhook registered with the API server, and its
/// workers and relays pointed at what pods on the node reach: Kafka's listener on the node's
/// address and the locally imported `ferry-sidecar` image. Dropping it deletes the namespace's
/// Ferry resources while the operator still runs (their finalizers need it) and the webhook
/// configuration.
struct OperatorWithWebhook {
    operator: Option<Operator>,
    env: &'static TestEnv,
    namespace: String,
    configuration: String,
}

impl OperatorWithWebhook {
    async fn start(env: &'static TestEnv, ns: &TempNamespace, real: &RealNode) -> Self {
        let configuration = unique_name("ferry-webhook");
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let url = format!("https://127.0.0.1:{port}");
        let image = ferry_image("ferry-sidecar");
        let operator = Operator::start(
            env,
            ns.name(),
            "real-node",
            &[
                "--webhook-addr",
                &addr,
                "--webhook-url",
                &url,
                "--webhook-configuration",
                &configuration,
                "--client-bootstrap",
                real.kafka_bootstrap(),
                "--sidecar-image",
                &image,
            ],
        );
        let configs = Api::<MutatingWebhookConfiguration>::all(ns.client());
        eventually("the webhook registered with its CA", CONVERGE, || async {
            let c = configs.get(&configuration).await.ok()?;
            c.webhooks?.first()?.client_config.ca_bundle.clone()
        })
        .await
        .expect("the operator registers its webhook");
        OperatorWithWebhook {
            operator: Some(operator),
            env,
            namespace: ns.name().to_owned(),
            configuration,
        }
    }
}

impl Drop for OperatorWithWebhook {
    fn drop(&mut self) {
        let env = self.env;
        let namespace = self.namespace.clone();
        let configuration = self.configuration.clone();
        ferry_testkit::run_to_completion(async move {
            let cleaned = async {
                let client = env.kube_client().await?;
                let consumers = Api::<ferry_operator::api::EventConsumer>::namespaced(
                    client.clone(),
                    &namespace,
                );
                let topics =
                    Api::<ferry_operator::api::EventTopic>::namespaced(client.clone(), &namespace);
                consumers
                    .delete_collection(&Default::default(), &Default::default())
                    .await?;
                topics
                    .delete_collection(&Default::default(), &Default::default())
                    .await?;
                eventually("the Ferry resources' finalizers", CONVERGE, || async {
                    let consumers = consumers.list(&Default::default()).await.ok()?;
                    let topics = topics.list(&Default::default()).await.ok()?;
                    (consumers.items.is_empty() && topics.items.is_empty()).then_some(())
                })
                .await?;
                support::remove_webhook_configurations(&client, &configuration).await;
                anyhow::Ok(())
            };
            if let Err(e) = cleaned.await {
                eprintln!("Ferry resources of {namespace} not cleaned up: {e:#}");
            }
        });
        drop(self.operator.take());
    }
}
