//! The webhook configurations that make the API server call Ferry (DESIGN §6): the
//! `MutatingWebhookConfiguration` of injection and the `ValidatingWebhookConfiguration` of
//! EventTopic contracts ([`super::contracts`]), both under the one name `--webhook-configuration`.
//!
//! Pure builders plus one apply. Scoped as tightly as admission allows: injection sees only
//! pods, only on CREATE, only those labelled `ferry.dev/inject: enabled` (so an operator outage
//! can never block another team's pods); contracts see only EventTopics that carry a schema
//! (a `matchCondition`), so an outage blocks nothing else; with `--namespace` only that
//! namespace.

use k8s_openapi::{
    ByteString,
    api::admissionregistration::v1::{
        MatchCondition, MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations,
        ServiceReference, ValidatingWebhook, ValidatingWebhookConfiguration, WebhookClientConfig,
    },
    apimachinery::pkg::apis::meta::v1::LabelSelector,
};
use kube::{
    Api, Client,
    api::{ObjectMeta, Patch, PatchParams},
};

/// The label a pod carries to be seen by the webhook.
pub const INJECT_LABEL: &str = "ferry.dev/inject";
/// Its value.
pub const INJECT_ENABLED: &str = "enabled";
/// The path the operator serves reviews on.
pub const PATH: &str = "/mutate";
/// The webhook's name inside the configuration (three DNS labels, as the API requires).
pub const WEBHOOK_NAME: &str = "inject.ferry.dev";
/// The path of EventTopic contract reviews.
pub const CONTRACTS_PATH: &str = "/validate-eventtopic";
/// The contract webhook's name inside its configuration.
pub const CONTRACTS_WEBHOOK_NAME: &str = "contracts.ferry.dev";
/// How long the API server waits for an answer. Five seconds: an answer takes microseconds
/// from the operator's caches, and a pod creation should not hang for the API's default 10 s
/// when the operator is unreachable.
const TIMEOUT_SECONDS: i32 = 5;

/// Where the API server reaches the webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A URL (outside a cluster: tests, the demo), e.g. `https://127.0.0.1:9443`.
    Url(String),
    /// The operator's Service, on port 443.
    Service { namespace: String, name: String },
}

impl Endpoint {
    /// The names the serving certificate must carry for the API server to accept it.
    pub fn certificate_names(&self) -> Vec<String> {
        match self {
            Self::Url(url) => vec![host_of(url).to_owned()],
            Self::Service { namespace, name } => vec![
                format!("{name}.{namespace}.svc"),
                format!("{name}.{namespace}.svc.cluster.local"),
                format!("{name}.{namespace}"),
                name.clone(),
            ],
        }
    }
}

/// The host of an `https://host[:port][/path]` URL (brackets of an IPv6 literal removed).
fn host_of(url: &str) -> &str {
    let rest = url.strip_prefix("https://").unwrap_or(url);
    let authority = rest.split('/').next().unwrap_or(rest);
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next().unwrap_or(v6);
    }
    authority.split(':').next().unwrap_or(authority)
}

/// What the API server is told.
#[derive(Debug, Clone)]
pub struct Registration {
    /// The configuration's name (cluster-scoped).
    pub name: String,
    pub endpoint: Endpoint,
    /// `Fail` (the default: an opted-in pod never starts without its relay) or `Ignore`.
    pub failure_policy: String,
    /// Only pods of this namespace, when the operator watches one.
    pub namespace: Option<String>,
}

impl Registration {
    /// Where the API server sends reviews of `path`, trusting `ca_pem`; without one, it leaves
    /// `caBundle` out, so that server-side apply leaves it to whoever writes it (cert-manager's
    /// cainjector).
    fn client_config(&self, path: &str, ca_pem: Option<&str>) -> WebhookClientConfig {
        let ca_bundle = ca_pem.map(|ca| ByteString(ca.as_bytes().to_vec()));
        match &self.endpoint {
            Endpoint::Url(url) => WebhookClientConfig {
                url: Some(format!("{}{path}", url.trim_end_matches('/'))),
                ca_bundle,
                service: None,
            },
            Endpoint::Service { namespace, name } => WebhookClientConfig {
                url: None,
                ca_bundle,
                service: Some(ServiceReference {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    path: Some(path.into()),
                    port: Some(443),
                }),
            },
        }
    }

    fn namespace_selector(&self) -> Option<LabelSelector> {
        self.namespace.as_ref().map(|ns| LabelSelector {
            match_labels: Some([("kubernetes.io/metadata.name".to_owned(), ns.clone())].into()),
            ..Default::default()
        })
    }

    fn metadata(&self) -> ObjectMeta {
        ObjectMeta {
            name: Some(self.name.clone()),
            labels: Some(
                [(
                    "app.kubernetes.io/managed-by".to_owned(),
                    "ferry-operator".to_owned(),
                )]
                .into(),
            ),
            ..Default::default()
        }
    }

    /// The injection configuration, trusting `ca_pem` (see [`Self::client_config`]).
    pub fn configuration(&self, ca_pem: Option<&str>) -> MutatingWebhookConfiguration {
        MutatingWebhookConfiguration {
            metadata: self.metadata(),
            webhooks: Some(vec![MutatingWebhook {
                name: WEBHOOK_NAME.into(),
                admission_review_versions: vec!["v1".into()],
                client_config: self.client_config(PATH, ca_pem),
                rules: Some(vec![RuleWithOperations {
                    operations: Some(vec!["CREATE".into()]),
                    api_groups: Some(vec![String::new()]),
                    api_versions: Some(vec!["v1".into()]),
                    resources: Some(vec!["pods".into()]),
                    scope: Some("Namespaced".into()),
                }]),
                object_selector: Some(LabelSelector {
                    match_labels: Some(
                        [(INJECT_LABEL.to_owned(), INJECT_ENABLED.to_owned())].into(),
                    ),
                    ..Default::default()
                }),
                namespace_selector: self.namespace_selector(),
                side_effects: "None".into(),
                reinvocation_policy: Some("IfNeeded".into()),
                failure_policy: Some(self.failure_policy.clone()),
                match_policy: Some("Equivalent".into()),
                timeout_seconds: Some(TIMEOUT_SECONDS),
                ..Default::default()
            }]),
        }
    }

    /// The contracts configuration: EventTopics that carry a schema, on CREATE and UPDATE.
    /// `Fail` whatever `--webhook-failure-policy` says: with the operator down, a schema change
    /// waits rather than slipping past the compatibility check, and the `matchCondition` keeps
    /// every other EventTopic, and everything else, out of it.
    pub fn contracts_configuration(&self, ca_pem: Option<&str>) -> ValidatingWebhookConfiguration {
        ValidatingWebhookConfiguration {
            metadata: self.metadata(),
            webhooks: Some(vec![ValidatingWebhook {
                name: CONTRACTS_WEBHOOK_NAME.into(),
                admission_review_versions: vec!["v1".into()],
                client_config: self.client_config(CONTRACTS_PATH, ca_pem),
                rules: Some(vec![RuleWithOperations {
                    operations: Some(vec!["CREATE".into(), "UPDATE".into()]),
                    api_groups: Some(vec!["ferry.dev".into()]),
                    api_versions: Some(vec!["v1alpha1".into()]),
                    resources: Some(vec!["eventtopics".into()]),
                    scope: Some("Namespaced".into()),
                }]),
                match_conditions: Some(vec![MatchCondition {
                    name: "has-schema".into(),
                    expression: "has(object.spec.schema)".into(),
                }]),
                namespace_selector: self.namespace_selector(),
                side_effects: "None".into(),
                failure_policy: Some("Fail".into()),
                match_policy: Some("Equivalent".into()),
                timeout_seconds: Some(TIMEOUT_SECONDS),
                ..Default::default()
            }]),
        }
    }

    /// Applies both configurations (server-side apply; the operator owns every field it sets).
    pub async fn apply(&self, client: &Client, ca_pem: Option<&str>) -> Result<(), kube::Error> {
        let params = PatchParams::apply(crate::field_manager::OPERATOR).force();
        Api::<MutatingWebhookConfiguration>::all(client.clone())
            .patch(
                &self.name,
                &params,
                &Patch::Apply(&self.configuration(ca_pem)),
            )
            .await?;
        Api::<ValidatingWebhookConfiguration>::all(client.clone())
            .patch(
                &self.name,
                &params,
                &Patch::Apply(&self.contracts_configuration(ca_pem)),
            )
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_hosts_become_certificate_names() {
        for (url, host) in [
            ("https://127.0.0.1:9443", "127.0.0.1"),
            ("https://127.0.0.1:9443/", "127.0.0.1"),
            ("https://webhook.example:443/x", "webhook.example"),
            ("https://[::1]:9443", "::1"),
        ] {
            assert_eq!(
                Endpoint::Url(url.into()).certificate_names(),
                vec![host.to_owned()]
            );
        }
    }

    #[test]
    fn the_configuration_sees_only_labelled_pods_on_create() {
        let r = Registration {
            name: "ferry".into(),
            endpoint: Endpoint::Url("https://127.0.0.1:9443".into()),
            failure_policy: "Fail".into(),
            namespace: Some("shop".into()),
        };
        let c = r.configuration(Some("PEM"));
        let w = &c.webhooks.expect("webhooks")[0];
        assert_eq!(
            w.client_config.url.as_deref(),
            Some("https://127.0.0.1:9443/mutate")
        );
        assert_eq!(
            w.object_selector
                .as_ref()
                .and_then(|s| s.match_labels.clone()),
            Some([(INJECT_LABEL.to_owned(), INJECT_ENABLED.to_owned())].into())
        );
        assert_eq!(w.side_effects, "None");
        assert_eq!(w.reinvocation_policy.as_deref(), Some("IfNeeded"));
        let rules = w.rules.as_ref().expect("rules");
        assert_eq!(rules[0].operations, Some(vec!["CREATE".to_owned()]));
        assert_eq!(
            w.namespace_selector
                .as_ref()
                .and_then(|s| s.match_labels.clone()),
            Some([("kubernetes.io/metadata.name".to_owned(), "shop".to_owned())].into())
        );
        assert_eq!(w.client_config.ca_bundle, Some(ByteString(b"PEM".to_vec())));
    }

    #[test]
    fn the_contracts_configuration_sees_only_event_topics_with_a_schema() {
        let r = Registration {
            name: "ferry".into(),
            endpoint: Endpoint::Url("https://127.0.0.1:9443".into()),
            failure_policy: "Ignore".into(),
            namespace: Some("shop".into()),
        };
        let c = r.contracts_configuration(Some("PEM"));
        let w = &c.webhooks.expect("webhooks")[0];
        assert_eq!(
            w.client_config.url.as_deref(),
            Some("https://127.0.0.1:9443/validate-eventtopic")
        );
        let rule = &w.rules.as_ref().expect("rules")[0];
        assert_eq!(rule.resources, Some(vec!["eventtopics".to_owned()]));
        assert_eq!(
            rule.operations,
            Some(vec!["CREATE".to_owned(), "UPDATE".to_owned()])
        );
        assert_eq!(
            w.match_conditions.as_ref().expect("conditions")[0].expression,
            "has(object.spec.schema)"
        );
        assert_eq!(w.failure_policy.as_deref(), Some("Fail"));
        assert_eq!(w.namespace_selector, r.namespace_selector());
    }

    #[test]
    fn without_a_ca_the_bundle_is_left_to_cainjector() {
        let r = Registration {
            name: "ferry".into(),
            endpoint: Endpoint::Service {
                namespace: "ops".into(),
                name: "ferry-webhook".into(),
            },
            failure_policy: "Fail".into(),
            namespace: None,
        };
        let c = serde_json::to_value(r.configuration(None)).expect("JSON");
        let client_config = &c["webhooks"][0]["clientConfig"];
        assert_eq!(client_config["service"]["name"], "ferry-webhook");
        assert!(
            client_config.get("caBundle").is_none(),
            "no caBundle field at all, so server-side apply does not own it: {client_config}"
        );
    }
}
