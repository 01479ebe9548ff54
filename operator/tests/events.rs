//! The operator's one Event publisher against the real API server: a long note, even one of
//! multi-byte characters, is cut to what the Events API accepts instead of the Event being lost.

use ferry_operator::events::{NOTE_LIMIT, Publisher};
use ferry_testkit::{TempNamespace, require_env, wait_for};
use k8s_openapi::api::{core::v1::ObjectReference, events::v1::Event};
use kube::{
    Api,
    api::ListParams,
    runtime::events::{EventType, Reporter},
};
use std::time::Duration;

#[tokio::test]
async fn a_long_multibyte_note_is_cut_to_the_api_limit_and_recorded() {
    let env = require_env!();
    let ns = TempNamespace::create(env).await.expect("namespace");
    let publisher = Publisher::new(
        ns.client(),
        Reporter {
            controller: "ferry-operator".into(),
            instance: None,
        },
    );
    let regarding = ObjectReference {
        api_version: Some("ferry.dev/v1alpha1".into()),
        kind: Some("EventTopic".into()),
        namespace: Some(ns.name().to_owned()),
        name: Some("long-note".into()),
        ..Default::default()
    };
    // 1,000 two-byte characters: 2,000 bytes, twice what the API server accepts.
    let note = "é".repeat(1000);
    publisher
        .publish(&regarding, EventType::Warning, "LongNote", "Test", &note)
        .await;
    let events: Api<Event> = Api::namespaced(ns.client(), ns.name());
    let long_notes = ListParams::default().fields("reason=LongNote");
    let recorded = wait_for("the Event", Duration::from_secs(30), || async {
        let found = events.list(&long_notes).await.ok()?;
        found.items.into_iter().next()?.note
    })
    .await;
    assert!(recorded.len() <= NOTE_LIMIT, "{} bytes", recorded.len());
    assert!(note.starts_with(&recorded), "a prefix of the note");
}
