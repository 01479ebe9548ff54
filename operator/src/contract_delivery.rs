//! Delivers the EventTopics' contracts to the relays: one ConfigMap per namespace,
//! [`CONFIG_MAP`], with a key per Kafka topic (`<topic>.json`, the schema as the relay's
//! `--contracts-dir` reads it), which the webhook mounts into every injected relay. The kubelet
//! updates a mounted ConfigMap in place and the relay reads its directory again every few
//! seconds, so a schema change reaches running relays without a restart.
//!
//! Level-triggered per namespace: a change to what the contracts read of an EventTopic (its
//! schema, Kafka topic name, age or deletion — not a status write), and its deletion (which a
//! controller never sees for a resource without a finalizer), marks its namespace and every
//! namespace naming the same Kafka topic (ownership is cluster-wide), and the
//! namespace's whole ConfigMap is computed again from the cache ([`desired`], pure) and applied
//! under one field manager, so keys of topics that are gone or lost their schema disappear.
//! Unchanged content is not applied again. Only the owner of a Kafka topic (the older
//! EventTopic, [`crate::ownership`]) delivers its contract. A `configMapRef` schema is read
//! when the namespace is computed, and the namespaces with one are computed again every
//! [`REFERENCED_POLL`], so an edit of that ConfigMap alone arrives within it. Polled, not
//! watched: a watch needs `list` on every ConfigMap in the cluster, and the operator reads
//! only the ConfigMaps an EventTopic names (one GET each per poll; few topics keep their
//! schema in a ConfigMap).

use std::{
    borrow::Borrow,
    collections::{BTreeMap, BTreeSet, HashMap},
    time::Duration,
};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{ConfigMap, ConfigMapVolumeSource, Volume, VolumeMount};
use kube::{
    Api, Client, ResourceExt as _,
    api::{Patch, PatchParams},
    runtime::{reflector::Store, watcher},
};
use serde_json::{Value, json};

use crate::{api::EventTopic, cache::SharedCache, ownership};

/// The ConfigMap of each namespace that holds its topics' contracts.
pub const CONFIG_MAP: &str = "ferry-contracts";

/// The pod volume of [`CONFIG_MAP`], in injected relays and in workers whose EventConsumer
/// says `validate`.
pub const VOLUME: &str = "ferry-contracts";

/// Where a relay or worker finds the contracts (its `--contracts-dir`).
pub const MOUNT_PATH: &str = "/etc/ferry/contracts";

/// The volume of the namespace's [`CONFIG_MAP`], optional: a namespace with no schema has
/// none, and the relay or worker then sees an empty directory (the kubelet updates it in place
/// when the ConfigMap appears or changes).
pub fn volume() -> Volume {
    Volume {
        name: VOLUME.into(),
        config_map: Some(ConfigMapVolumeSource {
            name: CONFIG_MAP.into(),
            optional: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// [`volume`] mounted read-only at [`MOUNT_PATH`].
pub fn mount() -> VolumeMount {
    VolumeMount {
        name: VOLUME.into(),
        mount_path: MOUNT_PATH.into(),
        read_only: Some(true),
        ..Default::default()
    }
}

/// The field manager of [`CONFIG_MAP`]'s data.
const MANAGER: &str = "ferry-operator/contracts";

/// After a change, wait this long for more before computing (a `kubectl apply -f dir/`).
const SETTLE: Duration = Duration::from_millis(300);

/// How often the namespaces whose EventTopics keep a schema in a ConfigMap are computed again.
pub const REFERENCED_POLL: Duration = Duration::from_secs(30);

/// After a failed apply, try the namespace again this soon.
const RETRY: Duration = Duration::from_secs(5);

/// The contract files of `namespace`, by key: each EventTopic there with a schema, that owns
/// its Kafka topic and is not being deleted. `configmap` resolves a `configMapRef` to the
/// document's text (None: not there yet, left out).
pub fn desired(
    all: &[impl Borrow<EventTopic>],
    namespace: &str,
    configmap: impl Fn(&str, &str) -> Option<String>,
) -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    for topic in all.iter().map(Borrow::borrow) {
        // The schema first: the ownership check reads every EventTopic, and most have none.
        let Some(schema) = &topic.spec.schema else {
            continue;
        };
        if topic.metadata.namespace.as_deref() != Some(namespace)
            || topic.metadata.deletion_timestamp.is_some()
            || ownership::older_owner(topic, all.iter().map(Borrow::borrow)).is_some()
        {
            continue;
        }
        let document = match (&schema.json_schema, &schema.config_map_ref) {
            (Some(inline), _) => inline.clone(),
            (None, Some(r)) => match configmap(&r.name, &r.key)
                .and_then(|text| serde_json::from_str::<Value>(&text).ok())
            {
                Some(document) => document,
                None => continue,
            },
            (None, None) => continue,
        };
        let mut file = json!({"jsonSchema": document});
        if let Some(event) = &schema.event {
            file["event"] = json!(event);
        }
        files.insert(
            format!("{}.json", topic.kafka_topic_name()),
            file.to_string(),
        );
    }
    files
}

/// What [`desired`] reads of `topic`: its schema, Kafka topic name, age (ownership) and
/// deletion.
fn contract_fingerprint(topic: &EventTopic) -> u64 {
    crate::recent::fingerprint(&(
        &topic.spec.schema,
        topic.kafka_topic_name(),
        &topic.metadata.creation_timestamp,
        topic.metadata.deletion_timestamp.is_some(),
    ))
}

/// Records what [`desired`] reads of `topic`; whether it changed since last seen.
fn remember(seen: &mut HashMap<String, u64>, topic: &EventTopic) -> bool {
    let uid = topic.metadata.uid.clone().unwrap_or_default();
    let now = contract_fingerprint(topic);
    seen.insert(uid, now) != Some(now)
}

/// Keeps every namespace's [`CONFIG_MAP`] current until `shutdown` completes.
pub async fn run(
    client: Client,
    topics: SharedCache<EventTopic>,
    resync: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let store = topics.store();
    let mut changes = Box::pin(topics.subscribe());
    let mut applied: HashMap<String, BTreeMap<String, String>> = HashMap::new();
    // What [`desired`] reads of each EventTopic (by UID): a status write changes none of it,
    // and then the namespace is not computed again.
    let mut seen: HashMap<String, u64> = HashMap::new();
    let mut dirty: BTreeSet<String> = BTreeSet::new();
    let mut due: Option<tokio::time::Instant> = None;
    let mut resync_at = tokio::time::Instant::now() + resync;
    let mut poll_at = tokio::time::Instant::now() + REFERENCED_POLL;
    tokio::pin!(shutdown);
    loop {
        let wake = due.unwrap_or(resync_at).min(resync_at).min(poll_at);
        tokio::select! {
            () = &mut shutdown => return,
            change = changes.next() => {
                let Some(Ok(event)) = change else { return };
                // The namespace of a changed EventTopic, and for a change or deletion after the
                // first list, every namespace naming the same Kafka topic: ownership is
                // cluster-wide, and the next oldest may own it now.
                let (topic, relevant, neighbours) = match &event {
                    watcher::Event::InitApply(t) => (t, remember(&mut seen, t), false),
                    watcher::Event::Apply(t) => (t, remember(&mut seen, t), true),
                    watcher::Event::Delete(t) => {
                        seen.remove(t.metadata.uid.as_deref().unwrap_or_default());
                        (t, true, true)
                    }
                    watcher::Event::Init | watcher::Event::InitDone => continue,
                };
                if !relevant {
                    continue;
                }
                dirty.extend(topic.namespace());
                if neighbours {
                    let name = topic.kafka_topic_name();
                    dirty.extend(
                        store
                            .state()
                            .iter()
                            .filter(|t| t.kafka_topic_name() == name)
                            .filter_map(|t| t.namespace()),
                    );
                }
                due.get_or_insert_with(|| tokio::time::Instant::now() + SETTLE);
            }
            () = tokio::time::sleep_until(wake) => {
                if tokio::time::Instant::now() >= resync_at {
                    // Every namespace with a ConfigMap: a configMapRef's content may have
                    // changed.
                    dirty.extend(applied.keys().cloned());
                    resync_at = tokio::time::Instant::now() + resync;
                }
                if tokio::time::Instant::now() >= poll_at {
                    dirty.extend(
                        store
                            .state()
                            .iter()
                            .filter(|t| {
                                t.spec
                                    .schema
                                    .as_ref()
                                    .is_some_and(|s| s.config_map_ref.is_some())
                            })
                            .filter_map(|t| t.namespace()),
                    );
                    poll_at = tokio::time::Instant::now() + REFERENCED_POLL;
                }
                due = None;
                for namespace in std::mem::take(&mut dirty) {
                    if let Err(e) = publish(&client, &store, &namespace, &mut applied).await {
                        tracing::warn!(namespace, error = %e, "cannot write the event contracts ConfigMap; retrying");
                        dirty.insert(namespace);
                        due = Some(tokio::time::Instant::now() + RETRY);
                    }
                }
            }
        }
    }
}

/// Computes `namespace`'s ConfigMap and applies it if it changed since the last apply.
async fn publish(
    client: &Client,
    store: &Store<EventTopic>,
    namespace: &str,
    applied: &mut HashMap<String, BTreeMap<String, String>>,
) -> kube::Result<()> {
    let all = store.state();
    let api = Api::<ConfigMap>::namespaced(client.clone(), namespace);
    // The referenced ConfigMaps, read once each.
    let mut referenced: HashMap<String, Option<ConfigMap>> = HashMap::new();
    for r in all
        .iter()
        .filter(|t| t.metadata.namespace.as_deref() == Some(namespace))
        .filter_map(|t| t.spec.schema.as_ref()?.config_map_ref.as_ref())
    {
        if !referenced.contains_key(&r.name) {
            referenced.insert(r.name.clone(), api.get_opt(&r.name).await?);
        }
    }
    let files = desired(&all, namespace, |name, key| {
        referenced
            .get(name)?
            .as_ref()?
            .data
            .as_ref()?
            .get(key)
            .cloned()
    });
    match applied.get(namespace) {
        Some(previous) if *previous == files => return Ok(()),
        // Nothing to deliver and nothing delivered by this process: create no ConfigMap, and
        // empty one left by an earlier run only if it exists.
        None if files.is_empty() && api.get_opt(CONFIG_MAP).await?.is_none() => {
            applied.insert(namespace.to_owned(), files);
            return Ok(());
        }
        _ => {}
    }
    let body = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": CONFIG_MAP, "labels": {
            "app.kubernetes.io/managed-by": "ferry-operator",
            "app.kubernetes.io/component": "event-contracts"}},
        "data": files,
    });
    api.patch(
        CONFIG_MAP,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    tracing::info!(namespace, topics = files.len(), "event contracts delivered");
    applied.insert(namespace.to_owned(), files);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str, ns: &str, created: &str, schema: Value) -> EventTopic {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": created},
            "spec": {"topicName": "users.v1", "partitions": 1, "schema": schema},
        }))
        .expect("topic")
    }

    #[test]
    fn each_owner_delivers_its_schema_under_its_kafka_topics_name() {
        let inline = json!({"jsonSchema": {"type": "object"}, "event": "user.created"});
        let owner = topic("users", "shop", "2026-01-01T00:00:00Z", inline.clone());
        // A newer EventTopic naming the same Kafka topic delivers nothing.
        let thief = topic(
            "copy",
            "shop",
            "2026-06-01T00:00:00Z",
            json!({"jsonSchema": false}),
        );
        // Kafka topic names are cluster-wide: a later one in another namespace loses too.
        let elsewhere = topic("users", "billing", "2026-07-01T00:00:00Z", inline);
        let all = [owner, thief, elsewhere];
        let files = desired(&all, "shop", |_, _| None);
        assert_eq!(files.len(), 1);
        let file: Value = serde_json::from_str(&files["users.v1.json"]).expect("JSON");
        assert_eq!(
            file,
            json!({"jsonSchema": {"type": "object"}, "event": "user.created"})
        );
    }

    #[test]
    fn a_config_map_schema_is_delivered_once_it_can_be_read() {
        let by_ref = topic(
            "users",
            "shop",
            "2026-01-01T00:00:00Z",
            json!({"configMapRef": {"name": "schemas", "key": "users.json"}}),
        );
        let all = [by_ref];
        assert!(desired(&all, "shop", |_, _| None).is_empty());
        assert!(desired(&all, "shop", |_, _| Some("{not json".into())).is_empty());
        let files = desired(&all, "shop", |name, key| {
            (name == "schemas" && key == "users.json").then(|| r#"{"type":"string"}"#.to_owned())
        });
        assert_eq!(
            files["users.v1.json"],
            r#"{"jsonSchema":{"type":"string"}}"#
        );
    }

    #[test]
    fn a_topic_being_deleted_delivers_nothing() {
        let mut gone = topic(
            "users",
            "shop",
            "2026-01-01T00:00:00Z",
            json!({"jsonSchema": true}),
        );
        gone.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
        );
        assert!(desired(&[gone], "shop", |_, _| None).is_empty());
    }
}
