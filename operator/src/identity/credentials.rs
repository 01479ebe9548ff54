//! The credential Secret of a service account, `ferry-kafka-<serviceAccount>`: what a pod (the
//! injected relay, a worker, or a JVM client) needs to connect as its own Kafka principal.

use std::collections::BTreeMap;

use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::api::ObjectMeta;
use rand::{Rng, distr::Alphanumeric};

/// Label on every credential Secret, so the operator finds them all (and only them).
pub const CREDENTIAL_LABEL: &str = "ferry.dev/credential";
/// Annotation a person sets on the Secret to ask for a new password.
pub const ROTATE_ANNOTATION: &str = "ferry.dev/rotate-credentials";
/// Annotation recording which principal the Secret belongs to.
pub const PRINCIPAL_ANNOTATION: &str = "ferry.dev/principal";
/// The only mechanism Ferry's principals use.
pub const MECHANISM: &str = "SCRAM-SHA-512";
/// 32 alphanumeric characters: about 190 bits, far beyond brute force, and safe to embed in a
/// JAAS line without quoting.
const PASSWORD_LENGTH: usize = 32;

/// How clients reach the brokers; the same for every credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSettings {
    pub bootstrap_servers: String,
    pub security_protocol: String,
}

/// The Secret's name for a service account.
pub fn secret_name(service_account: &str) -> String {
    format!("ferry-kafka-{service_account}")
}

/// A fresh random password.
pub fn new_password() -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(PASSWORD_LENGTH)
        .map(char::from)
        .collect()
}

/// The password stored in an existing Secret, if it has one.
pub fn stored_password(secret: &Secret) -> Option<String> {
    let bytes = secret.data.as_ref()?.get("password")?;
    String::from_utf8(bytes.0.clone())
        .ok()
        .filter(|p| !p.is_empty())
}

/// Whether a person asked for a new password.
pub fn rotation_requested(secret: &Secret) -> bool {
    secret
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(ROTATE_ANNOTATION))
}

/// The whole Secret, as the operator applies it (server-side apply owns every key).
pub fn secret(
    namespace: &str,
    service_account: &str,
    username: &str,
    password: &str,
    settings: &ClientSettings,
) -> Secret {
    let data: BTreeMap<String, ByteString> = [
        ("username", username.to_owned()),
        ("password", password.to_owned()),
        ("sasl.mechanism", MECHANISM.to_owned()),
        ("security.protocol", settings.security_protocol.clone()),
        ("bootstrap.servers", settings.bootstrap_servers.clone()),
        (
            "sasl.jaas.config",
            format!(
                "org.apache.kafka.common.security.scram.ScramLoginModule required username=\"{username}\" password=\"{password}\";"
            ),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), ByteString(v.into_bytes())))
    .collect();
    Secret {
        metadata: ObjectMeta {
            name: Some(secret_name(service_account)),
            namespace: Some(namespace.to_owned()),
            labels: Some(
                [
                    (CREDENTIAL_LABEL.to_owned(), "scram".to_owned()),
                    (
                        "app.kubernetes.io/managed-by".to_owned(),
                        "ferry-operator".to_owned(),
                    ),
                ]
                .into(),
            ),
            annotations: Some(
                [(PRINCIPAL_ANNOTATION.to_owned(), format!("User:{username}"))].into(),
            ),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(data),
        ..Secret::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ClientSettings {
        ClientSettings {
            bootstrap_servers: "kafka:9092".into(),
            security_protocol: "SASL_PLAINTEXT".into(),
        }
    }

    #[test]
    fn the_secret_has_everything_a_client_needs() {
        let s = secret(
            "shop",
            "user-service",
            "shop.user-service",
            "pw",
            &settings(),
        );
        assert_eq!(s.metadata.name.as_deref(), Some("ferry-kafka-user-service"));
        let data = s.data.as_ref().expect("data");
        let get = |k: &str| String::from_utf8(data[k].0.clone()).expect("utf-8");
        assert_eq!(get("username"), "shop.user-service");
        assert_eq!(get("password"), "pw");
        assert_eq!(get("sasl.mechanism"), "SCRAM-SHA-512");
        assert_eq!(get("security.protocol"), "SASL_PLAINTEXT");
        assert_eq!(get("bootstrap.servers"), "kafka:9092");
        assert!(
            get("sasl.jaas.config").contains("username=\"shop.user-service\" password=\"pw\";")
        );
        assert_eq!(stored_password(&s).as_deref(), Some("pw"));
        assert!(!rotation_requested(&s));
    }

    #[test]
    fn passwords_are_long_random_and_jaas_safe() {
        let a = new_password();
        assert_eq!(a.len(), PASSWORD_LENGTH);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, new_password());
    }

    #[test]
    fn rotation_is_asked_by_annotation() {
        let mut s = secret("a", "b", "a.b", "pw", &settings());
        s.metadata
            .annotations
            .get_or_insert_default()
            .insert(ROTATE_ANNOTATION.into(), "".into());
        assert!(rotation_requested(&s));
    }
}
