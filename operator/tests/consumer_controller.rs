//! The EventConsumer controller against a real kube-apiserver, controller-manager, KWOK and a
//! real Kafka broker: the real `ferry-operator run` binary turns an EventConsumer into a worker
//! Deployment whose pods KWOK makes Ready, retry and dead-letter topics, and a status that
//! says what is missing; deletion removes them all.

mod consumer_support;
mod support;

use std::{collections::BTreeMap, time::Duration};

use consumer_support::{CONVERGE, Consumers};
use ferry_operator::api::ConditionStatus::{False, True};
use ferry_testkit::wait_for;
use ferry_testkit::{require_env, unique_name};
use k8s_openapi::api::core::v1::Container;
use kube::api::DeleteParams;
use serde_json::json;

fn worker(d: &k8s_openapi::api::apps::v1::Deployment) -> Container {
    d.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .map(|p| p.containers[0].clone())
        .expect("a container")
}

fn args(c: &Container) -> Vec<String> {
    c.args.clone().unwrap_or_default()
}

#[tokio::test]
async fn a_consumer_gets_ready_workers_topics_and_is_cleaned_up() {
    let env = require_env!();
    let t = Consumers::new(env, &[]).await;
    let source = unique_name("orders");
    t.topic("orders", &source, 3).await;
    t.apply(
        "notify",
        json!({"topics": ["orders"], "serviceAccount": "notify",
               "delivery": {"http": {"url": "http://127.0.0.1:9/events", "timeout": "2s"}},
               "retry": {"delays": ["5s", "1m"]}}),
    )
    .await;
    let c = t.wait_ready("notify", True, "Ready", CONVERGE).await;
    let group = format!("{}.notify", t.f.ns.name());
    let retry = [
        format!("{source}.{group}.retry.5s"),
        format!("{source}.{group}.retry.1m"),
    ];
    let dlq = format!("{group}.dlq");

    // The status: workers, topics, and the identity controller's condition kept beside ours.
    let status = c.status.clone().expect("status");
    assert_eq!(status.replicas, Some(1));
    assert_eq!(status.ready_replicas, Some(1));
    assert_eq!(status.observed_generation, c.metadata.generation);
    let topics = status.topics.clone().expect("topics");
    assert_eq!(topics.source, std::slice::from_ref(&source));
    assert_eq!(topics.retry, retry);
    assert_eq!(topics.dead_letter.as_deref(), Some(dlq.as_str()));
    let types: Vec<&str> = status.conditions.iter().map(|c| c.type_.as_str()).collect();
    for wanted in ["Ready", "Reconciling", "Stalled", "AccessGranted"] {
        assert!(types.contains(&wanted), "{wanted} missing: {types:?}");
    }

    // Kafka: one tier per delay with the source's partitions, and the managed DLQ.
    for topic in &retry {
        t.wait_partitions(topic, Some(3)).await;
    }
    t.wait_partitions(&dlq, Some(3)).await;

    // The Deployment's pod template is what the spec says.
    let d = t.deployment("notify").await;
    let c = worker(&d);
    let a = args(&c);
    for flag in [
        format!("--topics={source}"),
        format!("--group={group}"),
        "--target-url=http://127.0.0.1:9/events".to_owned(),
        "--timeout=2s".to_owned(),
        "--retry-delays=5s,1m".to_owned(),
        format!("--dead-letter-topic={dlq}"),
    ] {
        assert!(a.contains(&flag), "{flag} missing from {a:?}");
    }
    let env_vars: BTreeMap<String, _> = c
        .env
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|e| (e.name.clone(), e))
        .collect();
    let password = env_vars["FERRY_KAFKA_PASSWORD"]
        .value_from
        .as_ref()
        .and_then(|v| v.secret_key_ref.as_ref())
        .expect("the password by reference");
    assert_eq!(
        (password.name.as_str(), password.key.as_str()),
        ("ferry-kafka-notify", "password")
    );
    let spec_text = serde_json::to_string(&d.spec).expect("json");
    let admin_password = env.var("FERRY_KAFKA_PASSWORD").expect("admin password");
    assert!(
        !spec_text.contains(admin_password),
        "the operator's password is in the Deployment"
    );
    let sc = c.security_context.clone().expect("securityContext");
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.run_as_non_root, Some(true));
    let probe_path = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        p.as_ref()
            .and_then(|p| p.http_get.as_ref())
            .and_then(|h| h.path.clone())
    };
    assert_eq!(probe_path(&c.readiness_probe).as_deref(), Some("/readyz"));
    assert_eq!(probe_path(&c.liveness_probe).as_deref(), Some("/healthz"));
    let owner = &d.metadata.owner_references.clone().expect("owner")[0];
    assert_eq!(owner.kind, "EventConsumer");
    t.f.wait_event("notify", "DeploymentCreated", CONVERGE)
        .await;

    // Deletion: workers, tiers and managed DLQ go; then the EventConsumer itself.
    t.api
        .delete("notify", &DeleteParams::default())
        .await
        .expect("deleted");
    wait_for(
        "the EventConsumer is gone once its finalizer ran",
        CONVERGE,
        || async { t.api.get_opt("notify").await.ok()?.is_none().then_some(()) },
    )
    .await;
    wait_for("the Deployment is gone", CONVERGE, || async {
        t.deployments
            .get_opt("notify-worker")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    for topic in retry.iter().chain([&dlq]) {
        t.wait_partitions(topic, None).await;
    }
    assert!(
        t.partitions(&source).await.is_some(),
        "the EventTopic's own topic stays"
    );
}

#[tokio::test]
async fn a_missing_event_topic_is_reported_then_the_consumer_starts() {
    let env = require_env!();
    let t = Consumers::new(env, &[]).await;
    let source = unique_name("users");
    t.apply(
        "project",
        json!({"topics": ["users"], "serviceAccount": "projector",
               "delivery": {"http": {"service": {"name": "projector", "port": 8000}}}}),
    )
    .await;
    let c = t
        .wait_ready("project", False, "TopicNotFound", CONVERGE)
        .await;
    let ready = c
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready").cloned())
        .expect("Ready");
    assert!(
        ready.message.contains("users") && ready.message.contains("not found"),
        "says which EventTopic: {}",
        ready.message
    );
    assert!(
        t.deployments
            .get_opt("project-worker")
            .await
            .expect("get")
            .is_none(),
        "no workers without their topic"
    );

    t.topic("users", &source, 2).await;
    t.wait_ready("project", True, "Ready", CONVERGE).await;
    let d = t.deployment("project").await;
    assert!(
        args(&worker(&d)).contains(&format!(
            "--target-url=http://projector.{}.svc:8000/",
            t.f.ns.name()
        )),
        "the Service's cluster DNS name: {:?}",
        args(&worker(&d))
    );
}

#[tokio::test]
async fn a_spec_change_rolls_the_template_and_drift_is_put_back() {
    let env = require_env!();
    let t = Consumers::new(env, &[]).await;
    let source = unique_name("orders");
    t.topic("orders", &source, 1).await;
    let spec = |max_in_flight: i32, delays: &[&str]| {
        json!({"topics": ["orders"], "serviceAccount": "roller", "maxInFlight": max_in_flight,
               "retry": {"delays": delays},
               "delivery": {"http": {"url": "http://127.0.0.1:9/"}}})
    };
    let group = format!("{}.roll", t.f.ns.name());
    let tier = |delay: &str| format!("{source}.{group}.retry.{delay}");
    t.apply("roll", spec(64, &["5s", "1m"])).await;
    t.wait_ready("roll", True, "Ready", CONVERGE).await;
    t.wait_partitions(&tier("1m"), Some(1)).await;
    let before = t.deployment("roll").await;

    // A new maxInFlight and one tier less: a new template, and once it is rolled out the
    // retired tier is deleted and no longer listed.
    t.apply("roll", spec(7, &["5s"])).await;
    t.wait_ready("roll", True, "Ready", CONVERGE).await;
    let after = t.deployment("roll").await;
    assert!(args(&worker(&after)).contains(&"--max-in-flight=7".to_owned()));
    assert!(args(&worker(&after)).contains(&"--retry-delays=5s".to_owned()));
    assert!(
        after.metadata.generation > before.metadata.generation,
        "a new template"
    );
    t.f.wait_event("roll", "DeploymentUpdated", CONVERGE).await;
    t.wait_partitions(&tier("1m"), None).await;
    t.wait_for("roll", "only the 5s tier listed", CONVERGE, |c| {
        c.status
            .as_ref()
            .and_then(|s| s.topics.as_ref())
            .is_some_and(|topics| topics.retry == [tier("5s")])
    })
    .await;
    assert!(
        t.partitions(&tier("5s")).await.is_some(),
        "the kept tier stays"
    );

    // Someone edits the Deployment by hand: the operator puts its template back.
    let patch = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "worker", "args": ["worker", "--max-in-flight=1"]}]}}}});
    t.deployments
        .patch(
            "roll-worker",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Strategic(&patch),
        )
        .await
        .expect("patched by hand");
    wait_for("drift put back", CONVERGE, || async {
        let d = t.deployments.get("roll-worker").await.ok()?;
        args(&worker(&d))
            .contains(&"--max-in-flight=7".to_owned())
            .then_some(())
    })
    .await;
    // Give the rollout a moment, then it is Ready again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    t.wait_ready("roll", True, "Ready", CONVERGE).await;

    // Someone deletes the Deployment: the operator creates it again, with the spec's template.
    let gone = t.deployment("roll").await.metadata.uid;
    t.deployments
        .delete("roll-worker", &DeleteParams::default())
        .await
        .expect("deleted by hand");
    let back = wait_for("the deleted Deployment put back", CONVERGE, || async {
        let d = t.deployments.get("roll-worker").await.ok()?;
        (d.metadata.uid != gone && d.metadata.deletion_timestamp.is_none()).then_some(d)
    })
    .await;
    assert!(args(&worker(&back)).contains(&"--max-in-flight=7".to_owned()));
    t.wait_ready("roll", True, "Ready", CONVERGE).await;
}

#[tokio::test]
async fn https_urls_are_refused_by_the_api_server() {
    let env = require_env!();
    let f = support::Fixture::new(env).await;
    let api: kube::Api<ferry_operator::api::EventConsumer> =
        kube::Api::namespaced(f.ns.client(), f.ns.name());
    let body = json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "EventConsumer",
        "metadata": {"name": "tls"},
        "spec": {"topics": ["t"], "serviceAccount": "s",
                 "delivery": {"http": {"url": "https://example.test/e"}}}});
    let err = api
        .create(
            &Default::default(),
            &serde_json::from_value(body).expect("valid object"),
        )
        .await
        .expect_err("refused");
    assert!(
        err.to_string().contains("plain HTTP only"),
        "a clear message: {err}"
    );
}

#[tokio::test]
async fn the_operator_killed_mid_reconcile_converges_after_restart() {
    let env = require_env!();
    let mut t = Consumers::new(env, &[]).await;
    let source = unique_name("orders");
    t.topic("orders", &source, 2).await;
    t.apply(
        "crash",
        json!({"topics": ["orders"], "serviceAccount": "crash",
               "delivery": {"http": {"url": "http://127.0.0.1:9/"}},
               "retry": {"delays": ["1s", "2s", "3s"]}}),
    )
    .await;
    let group = format!("{}.crash", t.f.ns.name());
    // Killed as soon as the first of its topics exists: the rest is still to do.
    let first = format!("{source}.{group}.retry.1s");
    wait_for("the first tier is created", CONVERGE, || async {
        t.partitions(&first).await.is_some().then_some(())
    })
    .await;
    t.kill_and_restart("consumer-test-restarted").await;
    let c = t.wait_ready("crash", True, "Ready", CONVERGE).await;
    assert_eq!(c.status.and_then(|s| s.ready_replicas), Some(1));
    for delay in ["1s", "2s", "3s"] {
        t.wait_partitions(&format!("{source}.{group}.retry.{delay}"), Some(2))
            .await;
    }
    t.wait_partitions(&format!("{group}.dlq"), Some(2)).await;
}
