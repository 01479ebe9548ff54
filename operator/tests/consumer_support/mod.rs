//! What the EventConsumer controller's tests share: a namespace with an operator, and ways to
//! apply EventTopics and EventConsumers and wait for what they should become.

#![allow(dead_code)] // each test binary uses a different part of it

use std::time::Duration;

use ferry_operator::api::{ConditionStatus, EventConsumer};
use ferry_testkit::TestEnv;
use k8s_openapi::api::apps::v1::Deployment;
use kube::{
    Api,
    api::{Patch, PatchParams},
};
use serde_json::{Value, json};

use crate::support::{Fixture, MANAGER, Operator, eventually};

/// Long enough for a cold operator to start, win its Lease, create topics, a credential and a
/// Deployment whose pods KWOK makes Ready, on a loaded 2-core CI.
pub const CONVERGE: Duration = Duration::from_secs(90);

/// A test namespace with the CRDs, a running operator and APIs for consumers.
pub struct Consumers {
    pub f: Fixture,
    pub api: Api<EventConsumer>,
    pub deployments: Api<Deployment>,
    pub operator: Operator,
}

impl Consumers {
    /// A namespace and an operator with fast lag rounds and a short scale-down cooldown.
    pub async fn new(env: &'static TestEnv, extra: &[&str]) -> Consumers {
        let f = Fixture::new(env).await;
        let mut args = vec!["--lag-interval", "1s", "--scale-down-cooldown", "4s"];
        args.extend_from_slice(extra);
        let operator = Operator::start(env, f.ns.name(), "consumer-test", &args);
        let api = Api::namespaced(f.ns.client(), f.ns.name());
        let deployments = Api::namespaced(f.ns.client(), f.ns.name());
        Consumers {
            f,
            api,
            deployments,
            operator,
        }
    }

    /// Applies an EventTopic and waits until it is Ready.
    pub async fn topic(&self, name: &str, kafka: &str, partitions: i32) {
        self.f
            .apply(
                name,
                json!({"topicName": kafka, "partitions": partitions, "replicationFactor": 1,
                       "deletionPolicy": "Delete"}),
            )
            .await;
        self.f
            .wait_ready(name, ConditionStatus::True, "Ready", CONVERGE)
            .await;
    }

    /// Applies an EventConsumer `name` with `spec` (server-side apply, forced).
    pub async fn apply(&self, name: &str, spec: Value) -> EventConsumer {
        let body = json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "EventConsumer",
                          "metadata": {"name": name}, "spec": spec});
        self.api
            .patch(
                name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await
            .expect("EventConsumer applied")
    }

    /// Waits until the consumer's Ready condition has `status` and `reason` for its current
    /// generation.
    pub async fn wait_ready(
        &self,
        name: &str,
        status: ConditionStatus,
        reason: &str,
        deadline: Duration,
    ) -> EventConsumer {
        let last = std::sync::Mutex::new(None);
        let result = eventually(deadline, || async {
            let c = self.api.get(name).await.ok()?;
            *last.lock().expect("lock") = c.status.clone();
            let ready = c
                .status
                .as_ref()?
                .conditions
                .iter()
                .find(|c| c.type_ == "Ready")?
                .clone();
            (ready.status == status
                && ready.reason == reason
                && ready.observed_generation == c.metadata.generation)
                .then_some(c)
        })
        .await;
        match result {
            Ok(c) => c,
            Err(_) => panic!(
                "EventConsumer {name} not Ready={status:?}/{reason} within {deadline:?}; last status: {:#?}",
                last.lock().expect("lock")
            ),
        }
    }

    /// Waits until `check` holds for the consumer, and returns it.
    pub async fn wait_for(
        &self,
        name: &str,
        what: &str,
        deadline: Duration,
        check: impl Fn(&EventConsumer) -> bool,
    ) -> EventConsumer {
        let last = std::sync::Mutex::new(None);
        let result = eventually(deadline, || async {
            let c = self.api.get(name).await.ok()?;
            *last.lock().expect("lock") = c.status.clone();
            check(&c).then_some(c)
        })
        .await;
        match result {
            Ok(c) => c,
            Err(_) => panic!(
                "EventConsumer {name}: {what} not within {deadline:?}; last status: {:#?}",
                last.lock().expect("lock")
            ),
        }
    }

    /// The worker Deployment, once it exists.
    pub async fn deployment(&self, consumer: &str) -> Deployment {
        let name = format!("{consumer}-worker");
        eventually(CONVERGE, || async {
            self.deployments.get(&name).await.ok()
        })
        .await
        .unwrap_or_else(|_| panic!("no Deployment {name}"))
    }

    /// Partition counts of Kafka topics (`None`: absent), as the broker has them now.
    pub async fn partitions(&self, topic: &str) -> Option<i32> {
        self.f
            .kafka
            .describe_topics(&[topic.to_owned()])
            .await
            .expect("describe")[0]
            .1
            .clone()
            .expect("no refusal")
            .map(|t| t.partitions)
    }

    /// Waits until a Kafka topic has `partitions` (`None`: is gone).
    pub async fn wait_partitions(&self, topic: &str, partitions: Option<i32>) {
        let found = eventually(CONVERGE, || async {
            (self.partitions(topic).await == partitions).then_some(())
        })
        .await;
        if found.is_err() {
            panic!(
                "Kafka topic {topic}: wanted {partitions:?} partitions, has {:?}",
                self.partitions(topic).await
            );
        }
    }
}
