//! The Kafka credential the plugin connects with: the consumer's own, from its Secret
//! `ferry-kafka-<serviceAccount>` (written by the operator's identity controller), read through
//! the API server with the user's RBAC. Never an admin credential: the plugin can do in Kafka
//! only what that consumer's workers already may (read its topics and — since issue #18 — its
//! dead letters, write its retry tiers), and only a user who may read that Secret gets it.

use std::collections::BTreeMap;

use clap::ValueEnum;
use ferry_common::kafka::{KafkaArgs, Password, SecurityProtocol};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use rdkafka::ClientConfig;

use crate::{
    cluster::Cluster,
    error::{Error, Result},
};

/// The Secret's keys, as `identity::credentials::secret` writes them.
const KEYS: [&str; 5] = [
    "bootstrap.servers",
    "security.protocol",
    "sasl.mechanism",
    "username",
    "password",
];

/// Reads the credential Secret `name` of the cluster's namespace as the user.
pub async fn fetch(cluster: &Cluster, name: &str) -> Result<BTreeMap<String, String>> {
    let ns = &cluster.namespace;
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), ns);
    let secret = secrets.get(name).await.map_err(|e| {
        Error::from_kube(
            e,
            format!("reading Secret {ns}/{name}"),
            format!(
                "get on the Secret {name} in namespace {ns} (the consumer's own Kafka credential; \
                 the dead letters are read and replayed with it, never with an admin credential)"
            ),
            Some(("Secret", ns, name)),
        )
    })?;
    Ok(secret
        .data
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| KEYS.contains(&k.as_str()))
        .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
        .collect())
}

/// The Kafka settings in a credential Secret's `data`; `bootstrap` replaces the Secret's
/// `bootstrap.servers` (a port-forward, or brokers the laptop reaches by another name).
pub fn kafka_args(
    data: &BTreeMap<String, String>,
    bootstrap: Option<&str>,
    namespace: &str,
    name: &str,
) -> Result<KafkaArgs> {
    let missing = |what: &str| Error::Credential {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        what: format!("no {what}"),
    };
    let get = |key: &str| data.get(key).filter(|v| !v.is_empty()).cloned();
    let bootstrap = match bootstrap {
        Some(b) => b.to_owned(),
        None => get("bootstrap.servers").ok_or_else(|| missing("bootstrap.servers"))?,
    };
    let protocol = get("security.protocol").unwrap_or_else(|| "PLAINTEXT".into());
    let security_protocol =
        SecurityProtocol::from_str(&protocol, true).map_err(|_| Error::Credential {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            what: format!("unknown security.protocol {protocol:?}"),
        })?;
    let args = KafkaArgs {
        bootstrap,
        security_protocol,
        sasl_mechanism: get("sasl.mechanism"),
        username: get("username"),
        password: get("password").map(Password::from),
        options: Vec::new(),
    };
    if security_protocol.uses_sasl() && (args.username.is_none() || args.password.is_none()) {
        return Err(missing("username or password"));
    }
    Ok(args)
}

/// The client configuration of `args`.
pub fn client_config(args: &KafkaArgs) -> Result<ClientConfig> {
    args.client_config()
        .map_err(|e| Error::usage(format!("Kafka settings: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_secret_becomes_kafka_settings_and_bootstrap_can_be_overridden() {
        let d = data(&[
            ("bootstrap.servers", "kafka:9092"),
            ("security.protocol", "SASL_PLAINTEXT"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("username", "shop.notify"),
            ("password", "pw"),
        ]);
        let args = kafka_args(&d, None, "shop", "ferry-kafka-notify").expect("args");
        assert_eq!(args.bootstrap, "kafka:9092");
        assert_eq!(args.security_protocol, SecurityProtocol::SaslPlaintext);
        let args = kafka_args(&d, Some("127.0.0.1:9092"), "shop", "s").expect("args");
        assert_eq!(args.bootstrap, "127.0.0.1:9092");
    }

    #[test]
    fn an_incomplete_secret_is_named() {
        let d = data(&[
            ("bootstrap.servers", "kafka:9092"),
            ("security.protocol", "SASL_PLAINTEXT"),
        ]);
        let err = kafka_args(&d, None, "shop", "ferry-kafka-notify").expect_err("no password");
        assert!(err.to_string().contains("shop/ferry-kafka-notify"), "{err}");
    }
}
