//! One admission review: the API server's request in, Ferry's answer out.
//!
//! Reads the operator's cache of EventTopics (never the API server: admission sits on the
//! path of every opted-in pod creation) to warn when the pod's service account produces to no
//! topic, so a relay that Kafka will refuse is seen at `kubectl apply`, not in a log.

use k8s_openapi::api::core::v1::Pod;
use kube::{
    core::{
        DynamicObject,
        admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation},
    },
    runtime::reflector::Store,
};

use super::{
    injection::{self, Decision},
    sidecar::SidecarImage,
};
use crate::api::EventTopic;

/// What answers reviews: the image to inject and the EventTopics the operator watches.
#[derive(Clone)]
pub struct Reviewer {
    pub image: SidecarImage,
    pub topics: Store<EventTopic>,
}

impl Reviewer {
    /// Answers one review. Never fails: a review that cannot be read is answered `invalid`,
    /// which the API server turns into a refusal under `failurePolicy: Fail`.
    pub fn review(&self, review: AdmissionReview<Pod>) -> AdmissionReview<DynamicObject> {
        let request: AdmissionRequest<Pod> = match review.try_into() {
            Ok(r) => r,
            Err(e) => return AdmissionResponse::invalid(e).into_review(),
        };
        let response = AdmissionResponse::from(&request);
        let (Operation::Create, Some(pod)) = (&request.operation, &request.object) else {
            return response.into_review();
        };
        let namespace = request.namespace.as_deref().unwrap_or_default();
        let pod_name = pod
            .metadata
            .name
            .as_deref()
            .or(pod.metadata.generate_name.as_deref())
            .unwrap_or_default();
        match injection::decide(pod, &self.image) {
            Decision::Unchanged { reason } => {
                tracing::debug!(namespace, pod = pod_name, reason, "admitted unchanged");
                response.into_review()
            }
            Decision::Deny(message) => {
                tracing::info!(namespace, pod = pod_name, message, "denied");
                response.deny(message).into_review()
            }
            Decision::Inject { patch, injected } => {
                let service_account = service_account(pod);
                let warning = (!self.produces(namespace, service_account)).then(|| {
                    format!(
                        "service account {service_account} is a producer of no EventTopic in namespace {namespace}: Kafka will refuse its relay until an EventTopic lists it under spec.producers"
                    )
                });
                tracing::info!(
                    namespace,
                    pod = pod_name,
                    ?injected,
                    warned = warning.is_some(),
                    "injected"
                );
                match response.with_patch(patch) {
                    Ok(mut response) => {
                        response.warnings = warning.map(|w| vec![w]);
                        response.into_review()
                    }
                    Err(e) => AdmissionResponse::from(&request)
                        .deny(format!("Ferry could not encode its patch: {e}"))
                        .into_review(),
                }
            }
        }
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
