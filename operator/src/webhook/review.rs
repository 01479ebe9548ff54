//! One admission review: the API server's request in, Ferry's answer out.
//!
//! Reads the operator's caches of EventTopics and EventConsumers (never the API server:
//! admission sits on the path of every opted-in pod creation) to find the Sidecar-placed
//! consumers that select the pod and their Kafka topics, and to warn when the pod's service
//! account produces to no topic, so a relay that Kafka will refuse is seen at `kubectl apply`,
//! not in a log.

use std::time::Instant;

use k8s_openapi::api::core::v1::Pod;
use kube::{
    core::{
        DynamicObject,
        admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation},
    },
    runtime::reflector::Store,
};

use super::{
    injection::{self, Decision, Worker},
    sidecar::SidecarImage,
};
use crate::{
    api::{EventConsumer, EventTopic},
    consumer::{deployment::WorkerSettings, resolve, sidecar as consumer_sidecar},
    metrics::{Admission, Metrics},
};

/// What answers reviews: the images and settings to inject and the caches of EventTopics and
/// EventConsumers the webhook watches.
#[derive(Clone)]
pub struct Reviewer {
    pub metrics: Metrics,
    pub image: SidecarImage,
    pub worker: WorkerSettings,
    pub topics: Store<EventTopic>,
    pub consumers: Store<EventConsumer>,
}

impl Reviewer {
    /// Answers one review, and counts it. Never fails: a review that cannot be read is
    /// answered `invalid`, which the API server turns into a refusal under
    /// `failurePolicy: Fail`.
    pub fn review(&self, review: AdmissionReview<Pod>) -> AdmissionReview<DynamicObject> {
        let start = Instant::now();
        let request: AdmissionRequest<Pod> = match review.try_into() {
            Ok(r) => r,
            Err(e) => {
                self.metrics
                    .admitted("", Admission::Invalid, 0, start.elapsed());
                return AdmissionResponse::invalid(e).into_review();
            }
        };
        let namespace = request.namespace.as_deref().unwrap_or_default();
        let response = self.answer(&request, namespace);
        let warnings = response.warnings.as_ref().map_or(0, Vec::len);
        let outcome = if !response.allowed {
            Admission::Denied
        } else if response.patch.is_some() {
            Admission::Injected
        } else {
            Admission::Unchanged
        };
        self.metrics
            .admitted(namespace, outcome, warnings, start.elapsed());
        response.into_review()
    }

    /// Answers one review of an EventTopic's contract ([`super::contracts`]). Not counted in
    /// the admissions metric, which is about pods (its alert says pods are refused); a refusal
    /// is logged, and the person applying the EventTopic reads Ferry's message at once.
    pub fn review_topic(
        &self,
        review: AdmissionReview<EventTopic>,
    ) -> AdmissionReview<DynamicObject> {
        let request: AdmissionRequest<EventTopic> = match review.try_into() {
            Ok(r) => r,
            Err(e) => return AdmissionResponse::invalid(e).into_review(),
        };
        let response = AdmissionResponse::from(&request);
        let Some(topic) = &request.object else {
            return response.into_review();
        };
        match super::contracts::admit(topic, request.old_object.as_ref()) {
            Ok(warnings) => {
                let mut response = response;
                response.warnings = Some(warnings).filter(|w| !w.is_empty());
                response.into_review()
            }
            Err(message) => {
                tracing::info!(
                    namespace = request.namespace.as_deref().unwrap_or_default(),
                    name = request.name,
                    message,
                    "EventTopic schema refused"
                );
                response.deny(message).into_review()
            }
        }
    }

    fn answer(&self, request: &AdmissionRequest<Pod>, namespace: &str) -> AdmissionResponse {
        let response = AdmissionResponse::from(request);
        let (Operation::Create, Some(pod)) = (&request.operation, &request.object) else {
            return response;
        };
        let pod_name = pod
            .metadata
            .name
            .as_deref()
            .or(pod.metadata.generate_name.as_deref())
            .unwrap_or_default();
        let (workers, mut warnings) = self.workers(namespace, pod);
        match injection::decide(pod, &self.image, &workers) {
            Decision::Unchanged { reason } => {
                tracing::debug!(namespace, pod = pod_name, reason, "admitted unchanged");
                let mut response = response;
                response.warnings = Some(warnings).filter(|w| !w.is_empty());
                response
            }
            Decision::Deny(message) => {
                tracing::info!(namespace, pod = pod_name, message, "denied");
                response.deny(message)
            }
            Decision::Inject { patch, injected } => {
                let service_account = service_account(pod);
                if injected.iter().any(|i| i == "relay")
                    && !self.produces(namespace, service_account)
                {
                    warnings.push(format!(
                        "service account {service_account} is a producer of no EventTopic in namespace {namespace}: Kafka will refuse its relay until an EventTopic lists it under spec.producers"
                    ));
                }
                tracing::info!(
                    namespace,
                    pod = pod_name,
                    ?injected,
                    warnings = warnings.len(),
                    "injected"
                );
                match response.with_patch(patch) {
                    Ok(mut response) => {
                        response.warnings = Some(warnings).filter(|w| !w.is_empty());
                        response
                    }
                    Err(e) => AdmissionResponse::from(request)
                        .deny(format!("Ferry could not encode its patch: {e}")),
                }
            }
        }
    }

    /// The workers of the Sidecar-placed EventConsumers of `namespace` that select `pod`, and a
    /// warning for each that cannot run yet (its topics are missing or not Ready): the pod is
    /// admitted without it, and the consumer's status lists the pod as one to restart.
    fn workers(&self, namespace: &str, pod: &Pod) -> (Vec<Worker<'static>>, Vec<String>) {
        let empty = std::collections::BTreeMap::new();
        let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
        let topics = self.topics.state();
        let mut consumers: Vec<_> = self
            .consumers
            .state()
            .into_iter()
            .filter(|c| {
                c.metadata.namespace.as_deref() == Some(namespace)
                    && c.metadata.deletion_timestamp.is_none()
                    && consumer_sidecar::selects(c, labels)
            })
            .collect();
        // One order for every pod of a Deployment, so their workers get the same ports.
        consumers.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        let mut workers = Vec::new();
        let mut warnings = Vec::new();
        for consumer in consumers {
            let name = consumer.metadata.name.clone().unwrap_or_default();
            match resolve::resolve(&consumer, topics.iter().map(AsRef::as_ref)) {
                Ok(resolved) => {
                    let settings = self.worker.clone();
                    workers.push(Worker {
                        consumer: name,
                        build: Box::new(move |port| {
                            consumer_sidecar::worker(&consumer, &resolved, &settings, port)
                        }),
                    });
                }
                Err(waiting) => warnings.push(format!(
                    "EventConsumer {name} selects this pod but cannot run yet ({}: {}): the pod starts without its worker; restart it once the EventConsumer is Ready",
                    waiting.reason, waiting.message
                )),
            }
        }
        (workers, warnings)
    }

    /// Whether an EventTopic of `namespace` lists `service_account` as a producer.
    fn produces(&self, namespace: &str, service_account: &str) -> bool {
        self.topics.state().iter().any(|t| {
            t.metadata.namespace.as_deref() == Some(namespace)
                && t.spec
                    .producers
                    .iter()
                    .any(|p| p.service_account == service_account)
        })
    }
}

/// The pod's service account, as the API server defaulted it.
fn service_account(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.service_account_name.as_deref())
        .filter(|s| !s.is_empty())
        .unwrap_or("default")
}
