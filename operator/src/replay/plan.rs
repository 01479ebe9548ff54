//! What an EventReplay needs, as a pure function of it and its EventConsumer: the Kafka
//! principal and the only ACLs it gets, the Kubernetes RBAC of the Job's ServiceAccount, and
//! the Job itself.
//!
//! Least privilege, per replay:
//! - Kafka: `User:ferry-replay-<uid>` may READ + DESCRIBE the consumer's dead-letter topic,
//!   READ its own group `ferry-replay-<uid>` (the reader names a group, never commits), and
//!   WRITE + DESCRIBE each destination (the first retry tier of each source topic, or the
//!   source topics with `toSource`); a dry run gets no WRITE at all. The name has no dot, so
//!   it is never Ferry-shaped (`User:<ns>.<sa>`) and the identity controller never touches it.
//! - Kubernetes: its ServiceAccount may get and patch the consumer's ledger ConfigMap and get
//!   and patch this one EventReplay's status, by name; nothing else.

use std::collections::BTreeMap;

use ferry_common::naming;
use k8s_openapi::{
    api::{
        batch::v1::{Job, JobSpec},
        core::v1::{
            Capabilities, ConfigMap, Container, EnvVar, EnvVarSource, PodSecurityContext, PodSpec,
            PodTemplateSpec, SecretKeySelector, SecurityContext, ServiceAccount,
        },
        rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject},
    },
    apimachinery::pkg::apis::meta::v1::OwnerReference,
};
use kube::{Resource, ResourceExt, api::ObjectMeta};

use crate::{
    api::{EventConsumer, EventReplay},
    consumer::deployment::WorkerSettings,
    identity::consumer_grants::group_id,
    kafka::acls::{AclBinding, Operation, ResourceType},
};

/// What the replay reads and writes, resolved from the EventConsumer (its status names the
/// topics the operator actually made).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The consumer's group.
    pub group: String,
    /// Its dead-letter topic.
    pub dead_letter_topic: String,
    /// Its Kafka source topics.
    pub sources: Vec<String>,
    /// The delay of its first retry tier.
    pub first_delay: Option<String>,
    /// Its uid (the ledger ConfigMap's owner).
    pub uid: Option<String>,
}

/// Why a replay cannot run (a terminal answer, shown in status).
pub type Refusal = String;

/// The consumer's topics, or `None` while the consumer controller has not resolved them yet.
pub fn resolve(consumer: &EventConsumer) -> Option<Resolved> {
    let topics = consumer.status.as_ref()?.topics.as_ref()?;
    if topics.source.is_empty() {
        return None;
    }
    let group = group_id(consumer);
    Some(Resolved {
        dead_letter_topic: topics
            .dead_letter
            .clone()
            .unwrap_or_else(|| naming::default_dead_letter_topic(&group)),
        group,
        sources: topics.source.clone(),
        first_delay: consumer.spec.retry.delays.first().cloned(),
        uid: consumer.uid(),
    })
}

/// The topics the replay writes: the first tier of each source, or the sources themselves;
/// refused where the spec and the consumer disagree (the plugin's own sentences).
pub fn destinations(replay: &EventReplay, resolved: &Resolved) -> Result<Vec<String>, Refusal> {
    let consumer = &replay.spec.consumer;
    match (&resolved.first_delay, replay.spec.to_source) {
        (Some(delay), false) => Ok(resolved
            .sources
            .iter()
            .map(|s| naming::retry_topic(s, &resolved.group, delay))
            .collect()),
        (Some(_), true) => Err(format!(
            "{consumer} has retry tiers: replays go to its first tier, which only its own group reads; toSource is for consumers without tiers"
        )),
        (None, true) => Ok(resolved.sources.clone()),
        (None, false) => Err(format!(
            "{consumer} has no retry tier (spec.retry.delays), so a replay would have to go to its source topic, where every consumer group of that topic receives it again; set toSource: true to do that, or add a retry delay"
        )),
    }
}

/// The replay's Kafka user name (and consumer group): `ferry-replay-<uid>`.
pub fn username(replay: &EventReplay) -> String {
    format!("ferry-replay-{}", replay.uid().unwrap_or_default())
}

/// The replay's Kafka principal.
pub fn principal(replay: &EventReplay) -> String {
    format!("User:{}", username(replay))
}

/// The only ACLs the replay's principal holds.
pub fn acls(replay: &EventReplay, resolved: &Resolved, destinations: &[String]) -> Vec<AclBinding> {
    use Operation::{Describe, Read, Write};
    let who = principal(replay);
    let mut out = vec![
        AclBinding::allow(&who, ResourceType::Topic, &resolved.dead_letter_topic, Read),
        AclBinding::allow(
            &who,
            ResourceType::Topic,
            &resolved.dead_letter_topic,
            Describe,
        ),
        AclBinding::allow(&who, ResourceType::Group, username(replay), Read),
    ];
    if !replay.spec.dry_run {
        for d in destinations {
            out.push(AclBinding::allow(&who, ResourceType::Topic, d, Write));
            out.push(AclBinding::allow(&who, ResourceType::Topic, d, Describe));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The name of everything made for one replay (Secret, ServiceAccount, Role, RoleBinding, Job).
pub fn object_name(replay: &EventReplay) -> String {
    let name = format!("ferry-replay-{}", replay.name_any());
    // Job names end up in pod labels: at most 63 characters.
    name.chars()
        .take(63)
        .collect::<String>()
        .trim_end_matches(['-', '.'])
        .to_owned()
}

fn owned_meta(replay: &EventReplay) -> ObjectMeta {
    ObjectMeta {
        name: Some(object_name(replay)),
        namespace: replay.namespace(),
        labels: Some(labels(replay)),
        owner_references: replay.controller_owner_ref(&()).map(|o| vec![o]),
        ..ObjectMeta::default()
    }
}

fn labels(replay: &EventReplay) -> BTreeMap<String, String> {
    [
        (
            "app.kubernetes.io/name".to_owned(),
            "ferry-replay".to_owned(),
        ),
        (
            "app.kubernetes.io/managed-by".to_owned(),
            "ferry-operator".to_owned(),
        ),
        ("ferry.dev/replay".to_owned(), replay.name_any()),
    ]
    .into()
}

/// The Job's ServiceAccount.
pub fn service_account(replay: &EventReplay) -> ServiceAccount {
    ServiceAccount {
        metadata: owned_meta(replay),
        ..ServiceAccount::default()
    }
}

/// What the Job's ServiceAccount may do: its ledger and this EventReplay's status (and a dry
/// run's selection ConfigMap), by name.
pub fn role(replay: &EventReplay) -> Role {
    let rule = |group: &str, resource: &str, name: String| PolicyRule {
        api_groups: Some(vec![group.to_owned()]),
        resources: Some(vec![resource.to_owned()]),
        resource_names: Some(vec![name]),
        verbs: vec!["get".into(), "patch".into()],
        ..PolicyRule::default()
    };
    let mut rules = vec![
        rule("", "configmaps", ledger_name(&replay.spec.consumer)),
        rule("ferry.dev", "eventreplays/status", replay.name_any()),
    ];
    if replay.spec.dry_run {
        // A dry run's selection, for `kubectl ferry dlq list`/`show`.
        rules.push(rule("", "configmaps", object_name(replay)));
    }
    Role {
        metadata: owned_meta(replay),
        rules: Some(rules),
    }
}

/// The ledger ConfigMap's name (`ferry_sidecar::dlq::ledger::configmap_name`, which the
/// operator cannot link: the sidecar depends on nothing of the operator and the reverse).
pub fn ledger_name(consumer: &str) -> String {
    format!("ferry-replays-{consumer}")
}

/// Binds [`role`] to [`service_account`].
pub fn role_binding(replay: &EventReplay) -> RoleBinding {
    RoleBinding {
        metadata: owned_meta(replay),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: object_name(replay),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: object_name(replay),
            namespace: replay.namespace(),
            ..Subject::default()
        }]),
    }
}

/// A dry run's (empty) selection ConfigMap, owned by the EventReplay.
pub fn selection_configmap(replay: &EventReplay) -> ConfigMap {
    ConfigMap {
        metadata: owned_meta(replay),
        ..ConfigMap::default()
    }
}

/// The Secret holding the replay principal's credential.
pub fn secret_meta(replay: &EventReplay) -> ObjectMeta {
    owned_meta(replay)
}

/// The Job that runs `ferry-sidecar dlq-replay`.
pub fn job(
    replay: &EventReplay,
    resolved: &Resolved,
    consumer: &str,
    settings: &WorkerSettings,
) -> Job {
    let spec = &replay.spec;
    let value = |name: &str, v: String| EnvVar {
        name: name.to_owned(),
        value: Some(v),
        ..EnvVar::default()
    };
    let secret = |name: &str, key: &str| EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: object_name(replay),
                key: key.to_owned(),
                optional: None,
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    };
    let mut env: Vec<EnvVar> = settings
        .kafka_env
        .iter()
        .map(|(k, v)| value(k, v.clone()))
        .collect();
    env.push(secret("FERRY_KAFKA_USERNAME", "username"));
    env.push(secret("FERRY_KAFKA_PASSWORD", "password"));
    env.push(value(
        "FERRY_REPLAY_NAMESPACE",
        replay.namespace().unwrap_or_default(),
    ));
    env.push(value("FERRY_REPLAY_NAME", replay.name_any()));
    env.push(value("FERRY_REPLAY_CONSUMER", consumer.to_owned()));
    if let Some(uid) = &resolved.uid {
        env.push(value("FERRY_REPLAY_CONSUMER_UID", uid.clone()));
    }
    env.push(value("FERRY_REPLAY_GROUP", resolved.group.clone()));
    env.push(value("FERRY_REPLAY_READER_GROUP", username(replay)));
    env.push(value(
        "FERRY_REPLAY_DEAD_LETTER_TOPIC",
        resolved.dead_letter_topic.clone(),
    ));
    env.push(value("FERRY_REPLAY_SOURCES", resolved.sources.join(",")));
    if let Some(d) = &resolved.first_delay {
        env.push(value("FERRY_REPLAY_FIRST_DELAY", d.clone()));
    }
    if spec.dry_run {
        env.push(value(
            "FERRY_REPLAY_SELECTION_CONFIGMAP",
            object_name(replay),
        ));
    }
    let mut args = vec!["dlq-replay".to_owned()];
    let mut flag = |on: bool, name: &str| {
        if on {
            args.push(format!("--{name}"));
        }
    };
    flag(spec.to_source, "to-source");
    flag(spec.dry_run, "dry-run");
    flag(spec.again, "again");
    if let Some(rate) = spec.rate {
        args.push(format!("--rate={rate}"));
    }
    if let Some(t) = replay.creation_timestamp() {
        args.push(format!("--requested-at={}", t.0));
    }
    for (name, v) in [
        ("reason", &spec.reason),
        ("type", &spec.event_type),
        ("topic", &spec.topic),
        ("since", &spec.since),
        ("until", &spec.until),
    ] {
        if let Some(v) = v {
            args.push(format!("--{name}={v}"));
        }
    }
    for id in &spec.ids {
        args.push(format!("--id={id}"));
    }
    Job {
        metadata: owned_meta(replay),
        spec: Some(JobSpec {
            // The process reports its own failure; a second try would find the same cause,
            // and a new EventReplay is how a person asks again.
            backoff_limit: Some(0),
            // The outcome lives in the EventReplay's status; the finished Job and its pod
            // stay a day for `kubectl logs`, then go (an EventReplay kept in Git would
            // otherwise keep a Completed pod forever).
            ttl_seconds_after_finished: Some(JOB_TTL_SECONDS),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(replay)),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(object_name(replay)),
                    restart_policy: Some("Never".into()),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        ..PodSecurityContext::default()
                    }),
                    containers: vec![Container {
                        name: "replay".into(),
                        image: Some(settings.image.clone()),
                        image_pull_policy: Some(settings.pull_policy.clone()),
                        args: Some(args),
                        env: Some(env),
                        security_context: Some(SecurityContext {
                            read_only_root_filesystem: Some(true),
                            allow_privilege_escalation: Some(false),
                            capabilities: Some(Capabilities {
                                drop: Some(vec!["ALL".into()]),
                                ..Capabilities::default()
                            }),
                            ..SecurityContext::default()
                        }),
                        ..Container::default()
                    }],
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        ..Job::default()
    }
}

/// How long a finished replay Job (and its pod's logs) stays: a day.
pub const JOB_TTL_SECONDS: i32 = 86_400;

/// The owner reference a ledger ConfigMap made by the operator carries.
pub fn ledger_owner(consumer: &EventConsumer) -> Option<OwnerReference> {
    consumer.controller_owner_ref(&()).map(|mut o| {
        o.controller = None;
        o.block_owner_deletion = None;
        o
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ConsumerTopics, EventConsumerStatus, EventReplaySpec};

    fn consumer(delays: &[&str]) -> EventConsumer {
        let mut c: EventConsumer = serde_json::from_value(serde_json::json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "EventConsumer",
            "metadata": {"name": "notify", "namespace": "shop", "uid": "c-1"},
            "spec": {"topics": ["orders"], "serviceAccount": "notify",
                     "delivery": {"http": {"url": "http://x/"}},
                     "retry": {"delays": delays}},
        }))
        .expect("consumer");
        c.status = Some(EventConsumerStatus {
            topics: Some(ConsumerTopics {
                source: vec!["orders.v1".into()],
                dead_letter: Some("shop.notify.dlq".into()),
                ..ConsumerTopics::default()
            }),
            ..EventConsumerStatus::default()
        });
        c
    }

    fn replay(spec: EventReplaySpec) -> EventReplay {
        let mut r = EventReplay::new("r1", spec);
        r.metadata.namespace = Some("shop".into());
        r.metadata.uid = Some("u-1".into());
        r
    }

    #[test]
    fn the_principal_reads_the_dead_letters_and_writes_the_first_tier_only() {
        let c = consumer(&["5s"]);
        let resolved = resolve(&c).expect("resolved");
        let r = replay(EventReplaySpec {
            consumer: "notify".into(),
            all: true,
            ..EventReplaySpec::default()
        });
        let to = destinations(&r, &resolved).expect("tier");
        assert_eq!(to, ["orders.v1.shop.notify.retry.5s"]);
        let acls: Vec<(String, ResourceType, Operation)> = acls(&r, &resolved, &to)
            .into_iter()
            .map(|a| (a.resource_name, a.resource_type, a.operation))
            .collect();
        assert_eq!(acls.len(), 5, "{acls:?}");
        assert!(acls.contains(&(
            "shop.notify.dlq".into(),
            ResourceType::Topic,
            Operation::Read
        )));
        assert!(acls.contains(&(to[0].clone(), ResourceType::Topic, Operation::Write)));
        assert!(acls.contains(&(
            "ferry-replay-u-1".into(),
            ResourceType::Group,
            Operation::Read
        )));
        assert!(!acls.iter().any(|a| a.0 == "orders.v1"));
        assert_eq!(principal(&r), "User:ferry-replay-u-1");
        assert!(!crate::identity::principal::is_ferry_shaped(&principal(&r)));
    }

    #[test]
    fn a_dry_run_gets_no_write_and_to_source_needs_a_consumer_without_tiers() {
        let resolved = resolve(&consumer(&["5s"])).expect("resolved");
        let dry = replay(EventReplaySpec {
            consumer: "notify".into(),
            dry_run: true,
            ..EventReplaySpec::default()
        });
        let to = destinations(&dry, &resolved).expect("tier");
        assert!(
            acls(&dry, &resolved, &to)
                .iter()
                .all(|a| a.operation != Operation::Write)
        );
        let to_source = replay(EventReplaySpec {
            consumer: "notify".into(),
            to_source: true,
            all: true,
            ..EventReplaySpec::default()
        });
        assert!(destinations(&to_source, &resolved).is_err());
        let no_tiers = resolve(&consumer(&[])).expect("resolved");
        assert_eq!(
            destinations(&to_source, &no_tiers).expect("source"),
            ["orders.v1"]
        );
        let plain = replay(EventReplaySpec {
            consumer: "notify".into(),
            all: true,
            ..EventReplaySpec::default()
        });
        assert!(
            destinations(&plain, &no_tiers)
                .expect_err("no tiers, no toSource")
                .contains("toSource")
        );
    }

    #[test]
    fn the_job_role_names_its_two_objects_only() {
        let r = replay(EventReplaySpec {
            consumer: "notify".into(),
            all: true,
            ..EventReplaySpec::default()
        });
        let rules = role(&r).rules.expect("rules");
        assert_eq!(rules.len(), 2);
        assert_eq!(
            rules[0].resource_names.as_deref(),
            Some(&["ferry-replays-notify".to_owned()][..])
        );
        assert_eq!(
            rules[1].resource_names.as_deref(),
            Some(&["r1".to_owned()][..])
        );
        assert!(rules.iter().all(|r| r.verbs == ["get", "patch"]));
        let dry = replay(EventReplaySpec {
            consumer: "notify".into(),
            dry_run: true,
            ..EventReplaySpec::default()
        });
        let rules = role(&dry).rules.expect("rules");
        assert_eq!(
            rules[2].resource_names.as_deref(),
            Some(&["ferry-replay-r1".to_owned()][..]),
            "a dry run may also write its own selection ConfigMap"
        );
    }
}
