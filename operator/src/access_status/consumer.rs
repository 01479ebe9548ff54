//! Writes an EventConsumer's `status.access` and `AccessGranted` condition — and nothing else
//! of its status, which belongs to the consumer controller (Ready, lag, replicas).
//!
//! Two writers of one status stay out of each other's way through server-side apply: this one
//! applies under [`field_manager::ACCESS`] only the two fields it owns, and the CRD declares
//! `conditions` a list-map keyed by `type`, so its one condition merges beside the others
//! instead of replacing the list.

use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams},
};
use serde_json::{Value, json};

use super::{ACCESS_GRANTED, book::Access};
use crate::{api::EventConsumer, field_manager};

/// The server-side-apply body for `consumer` given the identity controller's `entry`, or `None`
/// when the status already shows it.
pub fn consumer_patch(consumer: &EventConsumer, entry: &Access, now: &str) -> Option<Value> {
    let generation = consumer.metadata.generation;
    let previous = consumer.status.clone().unwrap_or_default();
    let condition = Access::state(Some(entry), generation, true).condition(
        &previous.conditions,
        generation,
        now,
    );
    let shown = previous
        .conditions
        .iter()
        .find(|c| c.type_ == ACCESS_GRANTED);
    if previous.access.as_ref() == Some(&entry.declared) && shown == Some(&condition) {
        return None;
    }
    Some(json!({
        "apiVersion": "ferry.dev/v1alpha1",
        "kind": "EventConsumer",
        "status": {"access": entry.declared, "conditions": [condition]},
    }))
}

/// Writes `consumer`'s access part of the status, unless it is current.
pub async fn write_consumer_access(
    client: &Client,
    consumer: &EventConsumer,
    entry: &Access,
) -> kube::Result<()> {
    let now = jiff::Timestamp::now().to_string();
    let Some(patch) = consumer_patch(consumer, entry, &now) else {
        return Ok(());
    };
    let api: Api<EventConsumer> =
        Api::namespaced(client.clone(), &consumer.namespace().unwrap_or_default());
    api.patch_status(
        &consumer.name_any(),
        &PatchParams::apply(field_manager::ACCESS).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        access_status::book::tests::entry,
        api::{Condition, ConditionStatus},
    };

    fn consumer(generation: i64, status: Value) -> EventConsumer {
        serde_json::from_value(json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "EventConsumer",
            "metadata": {"name": "c", "namespace": "ns", "generation": generation},
            "spec": {"topics": ["t"], "serviceAccount": "s",
                     "delivery": {"http": {"url": "http://x"}}},
            "status": status,
        }))
        .expect("valid EventConsumer")
    }

    #[test]
    fn only_access_and_its_condition_are_applied() {
        let c = consumer(3, json!({"replicas": 2, "conditions": []}));
        let patch = consumer_patch(&c, &entry(3, &["User:ns.s"], None), "t1").expect("a patch");
        let status = &patch["status"];
        assert_eq!(
            status
                .as_object()
                .map(|o| o.keys().cloned().collect::<Vec<_>>()),
            Some(vec!["access".to_owned(), "conditions".to_owned()]),
            "{patch}"
        );
        let conditions: Vec<Condition> =
            serde_json::from_value(status["conditions"].clone()).expect("conditions");
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].type_, ACCESS_GRANTED);
        assert_eq!(conditions[0].status, ConditionStatus::True);
        assert_eq!(conditions[0].observed_generation, Some(3));
    }

    #[test]
    fn a_current_status_is_not_written_again_whatever_else_it_holds() {
        let e = entry(3, &["User:ns.s"], None);
        let first = consumer_patch(&consumer(3, json!({})), &e, "t1").expect("a patch");
        // The consumer controller's Ready beside ours does not make ours stale.
        let mut conditions = first["status"]["conditions"].clone();
        conditions.as_array_mut().expect("list").push(json!({
            "type": "Ready", "status": "True", "reason": "Ready", "message": "",
            "lastTransitionTime": "t0"
        }));
        let current = consumer(
            3,
            json!({"access": first["status"]["access"], "conditions": conditions}),
        );
        assert_eq!(consumer_patch(&current, &e, "t2"), None);
        // A newer generation is written again.
        let newer = consumer(
            4,
            current.status.clone().map(|s| json!(s)).unwrap_or_default(),
        );
        assert!(consumer_patch(&newer, &entry(4, &["User:ns.s"], None), "t2").is_some());
    }
}
