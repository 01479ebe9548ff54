//! `kubectl ferry dlq` against the real API server, Kafka and worker: events a real worker
//! dead-lettered (the target answered 422) are listed with their reasons, filters select
//! exactly what they say, `--dry-run` changes nothing, a replay delivers each event once, a
//! second replay replays nothing, and `--again` replays but the worker's de-duplication keeps
//! it from a second effect.

mod support;

use std::time::Duration;

use ferry_common::headers;
use ferry_operator::{api::EventConsumer, identity::grants::ProducerGrant};
use ferry_testkit::{TempSchema, require_env, wait_for};
use k8s_openapi::api::core::v1::{ConfigMap, Event};
use kube::{
    Api,
    api::{Patch, PatchParams},
};
use rdkafka::{
    Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
    message::Headers,
};
use serde_json::{Value, json};
use support::{CONSUMER, Fixture, TOPIC, Target, admin_producer, envelope, identity, produce};

/// Generous on a loaded 2-core machine: a worker start, a rebalance, a delivery.
const WITHIN: Duration = Duration::from_secs(90);

fn ids(json: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(json).expect("JSON list");
    let mut ids: Vec<String> = v
        .as_array()
        .expect("array")
        .iter()
        .map(|d| d["eventId"].as_str().unwrap_or_default().to_owned())
        .collect();
    ids.sort();
    ids
}

/// Whether the group committed every record of `topic` (the worker finished with it).
fn all_committed(fx: &Fixture, topic: &str) -> bool {
    let consumer: BaseConsumer = fx
        .env
        .kafka_config()
        .set("group.id", &fx.group)
        .create()
        .expect("consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let mut tpl = TopicPartitionList::new();
    let mut ends = Vec::new();
    for p in metadata.topics()[0].partitions() {
        tpl.add_partition(topic, p.id());
        let (_, high) = consumer
            .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
            .expect("watermarks");
        ends.push(high);
    }
    let Ok(committed) = consumer.committed_offsets(tpl, Duration::from_secs(10)) else {
        return false;
    };
    committed
        .elements()
        .iter()
        .zip(ends)
        .all(|(e, high)| match e.offset() {
            Offset::Offset(o) => o >= high,
            _ => high == 0,
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_of_a_real_worker_are_listed_filtered_and_replayed_once() {
    let env = require_env!();
    let fx = Fixture::create(env, 2).await;
    let database = TempSchema::create(env).await.expect("schema");
    let target = Target::start(422).await;
    let _worker = fx.worker(&target.url, &database);

    let producer = admin_producer(env);
    for (id, event) in [
        ("e1", "order.created"),
        ("e2", "order.created"),
        ("e3", "order.paid"),
        ("e4", "order.created"),
    ] {
        produce(
            &producer,
            fx.source.name(),
            None,
            id,
            &envelope(id, event),
            &[],
        )
        .await;
    }
    // One more dead letter, written long ago for another reason, and one of another group
    // in the same topic, which this consumer's list never shows.
    let old = [
        (headers::ERROR, "HTTP 400 Bad Request"),
        (headers::ORIGINAL_TOPIC, fx.source.name()),
        (headers::ORIGINAL_PARTITION, "0"),
        (headers::ORIGINAL_OFFSET, "999"),
        (headers::ATTEMPTS, "1"),
        (headers::GROUP, fx.group.as_str()),
        (headers::FAILED_AT, "2020-01-01T00:00:00Z"),
    ];
    produce(
        &producer,
        fx.dead_letter.name(),
        Some(0),
        "e5",
        &envelope("e5", "order.created"),
        &old,
    )
    .await;
    let mut other = old;
    other[5] = (headers::GROUP, "someone.else");
    produce(
        &producer,
        fx.dead_letter.name(),
        Some(1),
        "x9",
        &envelope("x9", "order.created"),
        &other,
    )
    .await;

    // The worker dead-letters the four at once (422 is permanent).
    let listed = wait_for("the worker's four dead letters listed", WITHIN, || async {
        let json = fx.plugin_ok(&["dlq", "list", "--direct", CONSUMER, "-o", "json"]);
        (ids(&json).len() == 5).then_some(json)
    })
    .await;
    assert_eq!(ids(&listed), ["e1", "e2", "e3", "e4", "e5"]);
    let items: Value = serde_json::from_str(&listed).expect("json");
    for item in items.as_array().expect("array") {
        assert_eq!(item["group"], fx.group.as_str());
        assert_eq!(item["originalTopic"], fx.source.name());
        if item["eventId"] != "e5" {
            assert!(
                item["reason"].as_str().unwrap_or_default().contains("422"),
                "{item}"
            );
        }
    }
    let table = fx.plugin_ok(&["dlq", "list", "--direct", CONSUMER]);
    assert!(table.starts_with("EVENT ID"), "{table}");
    assert!(
        table.contains("order.paid") && !table.contains("x9"),
        "{table}"
    );

    // Filters select exactly what they say.
    let pick = |extra: &[&str]| {
        let mut args = vec!["dlq", "list", "--direct", CONSUMER, "-o", "json"];
        args.extend_from_slice(extra);
        ids(&fx.plugin_ok(&args))
    };
    assert_eq!(pick(&["--type", "order.paid"]), ["e3"]);
    assert_eq!(pick(&["--reason", "bad request"]), ["e5"]);
    assert_eq!(pick(&["--reason", "422"]), ["e1", "e2", "e3", "e4"]);
    assert_eq!(pick(&["--since", "1h"]), ["e1", "e2", "e3", "e4"]);
    assert_eq!(pick(&["--until", "2021-01-01T00:00:00Z"]), ["e5"]);
    assert_eq!(pick(&["--id", "e2", "--id", "e4"]), ["e2", "e4"]);
    let yaml = fx.plugin_ok(&[
        "dlq",
        "list",
        "--direct",
        CONSUMER,
        "--type",
        "order.paid",
        "-o",
        "yaml",
    ]);
    assert!(yaml.contains("eventId: e3"), "{yaml}");

    // One event in full.
    let shown = fx.plugin_ok(&["dlq", "show", "--direct", CONSUMER, "e3"]);
    for expected in [
        "Event ID:         e3",
        "order.paid",
        headers::ERROR,
        "Payload:",
        "\"id\": \"e3\"",
    ] {
        assert!(
            shown.contains(expected),
            "{expected:?} missing in:\n{shown}"
        );
    }
    let shown: Value = serde_json::from_str(
        &fx.plugin_ok(&["dlq", "show", "--direct", CONSUMER, "e3", "-o", "json"]),
    )
    .expect("json");
    assert_eq!(shown["payload"]["event"], "order.paid");
    let missing = fx.plugin(&["dlq", "show", "--direct", CONSUMER, "nope"]);
    assert!(!missing.status.success());

    // The service is fixed. A dry run sends and records nothing.
    target.answer(200);
    let dry = fx.plugin_ok(&["dlq", "replay", "--direct", CONSUMER, "--all", "--dry-run"]);
    assert!(dry.contains("would replay:       5"), "{dry}");
    let ledgers: Api<ConfigMap> = Api::namespaced(fx.ns.client(), fx.ns.name());
    let ledger = format!("ferry-replays-{CONSUMER}");
    assert!(ledgers.get_opt(&ledger).await.expect("get").is_none());
    assert!(
        all_committed(&fx, fx.tier.name()),
        "the dry run wrote to the tier"
    );

    // A bare replay (no filter) is refused rather than replaying everything by accident.
    let bare = fx.plugin(&["dlq", "replay", "--direct", CONSUMER]);
    assert!(!bare.status.success());
    assert!(String::from_utf8_lossy(&bare.stderr).contains("--all"));

    // The replay delivers each event once, through the worker.
    let replayed = fx.plugin_ok(&[
        "dlq", "replay", "--direct", CONSUMER, "--all", "--rate", "50/s",
    ]);
    assert!(replayed.contains("replayed:           5"), "{replayed}");
    wait_for("each replayed event delivered", WITHIN, || async {
        let accepted = target.accepted();
        (accepted.len() == 5).then_some(())
    })
    .await;
    wait_for("the worker to finish the tier", WITHIN, || async {
        all_committed(&fx, fx.tier.name())
    })
    .await;
    let accepted = target.accepted();
    for id in ["e1", "e2", "e3", "e4", "e5"] {
        assert_eq!(accepted.get(id), Some(&1), "{id}: {accepted:?}");
    }
    let cm = ledgers.get(&ledger).await.expect("the ledger ConfigMap");
    let events: Api<Event> = Api::namespaced(fx.ns.client(), fx.ns.name());
    let recorded = events.list(&Default::default()).await.expect("events");
    assert!(
        recorded
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("Replayed")
                && e.involved_object.name.as_deref() == Some(CONSUMER)
                && e.message
                    .as_deref()
                    .is_some_and(|m| m.contains("replayed 5"))),
        "no Replayed Event on the EventConsumer: {:?}",
        recorded
            .items
            .iter()
            .map(|e| &e.message)
            .collect::<Vec<_>>()
    );
    assert!(
        cm.metadata
            .owner_references
            .is_some_and(|o| o[0].name == CONSUMER)
    );

    // The same selection again replays nothing.
    let again = fx.plugin_ok(&["dlq", "replay", "--direct", CONSUMER, "--all"]);
    assert!(again.contains("replayed:           0"), "{again}");
    assert!(again.contains("already replayed:   5"), "{again}");
    let json: Value = serde_json::from_str(&fx.plugin_ok(&[
        "dlq",
        "replay",
        "--direct",
        CONSUMER,
        "--type",
        "order.paid",
        "-o",
        "json",
    ]))
    .expect("json");
    assert_eq!(json["sends"].as_array().map(Vec::len), Some(0), "{json}");
    assert_eq!(json["alreadyReplayed"].as_array().map(Vec::len), Some(1));

    // --again sends them, and de-duplication by event id keeps them from a second effect.
    let requests_before = target.requests().len();
    let forced = fx.plugin_ok(&["dlq", "replay", "--direct", CONSUMER, "--all", "--again"]);
    assert!(forced.contains("replayed:           5"), "{forced}");
    wait_for(
        "the worker to finish the re-replayed tier records",
        WITHIN,
        || async { all_committed(&fx, fx.tier.name()) },
    )
    .await;
    assert_eq!(
        target.requests().len(),
        requests_before,
        "a de-duplicated event was delivered"
    );
    for id in ["e1", "e2", "e3", "e4", "e5"] {
        assert_eq!(target.accepted().get(id), Some(&1), "{id}");
    }
}

/// A consumer without retry tiers: a replay must say it goes to the source topic
/// (`--to-source`), and then writes there with a producer's credential, each record keeping
/// its key, partition and event id, without the worker's bookkeeping headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tiers_a_replay_goes_to_the_source_only_when_asked() {
    let env = require_env!();
    let fx = Fixture::create(env, 2).await;
    let consumers: Api<EventConsumer> = Api::namespaced(fx.ns.client(), fx.ns.name());
    consumers
        .patch(
            CONSUMER,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"retry": {"delays": null}}})),
        )
        .await
        .expect("tiers removed");
    let dead = [
        (headers::EVENT_ID, "e7"),
        (headers::ERROR, "target answered 422 Unprocessable Entity"),
        (headers::ORIGINAL_TOPIC, fx.source.name()),
        (headers::ORIGINAL_PARTITION, "1"),
        (headers::ORIGINAL_OFFSET, "5"),
        (headers::ATTEMPTS, "3"),
        (headers::GROUP, fx.group.as_str()),
        (headers::FAILED_AT, "2026-11-30T10:00:00Z"),
    ];
    let producer = admin_producer(env);
    produce(
        &producer,
        fx.dead_letter.name(),
        Some(0),
        "k7",
        &envelope("e7", "order.created"),
        &dead,
    )
    .await;

    let refused = fx.plugin(&["dlq", "replay", "--direct", CONSUMER, "--all"]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("no retry tier") && err.contains("--to-source"),
        "{err}"
    );

    let _producer_identity = identity(
        env,
        &fx.ns,
        "order-service",
        &[ProducerGrant {
            resource: format!("EventTopic/{}/{TOPIC}", fx.ns.name()),
            namespace: fx.ns.name().to_owned(),
            service_account: "order-service".into(),
            topic: fx.source.name().to_owned(),
        }],
        &[],
    )
    .await;
    let out = fx.plugin_ok(&[
        "dlq",
        "replay",
        "--direct",
        CONSUMER,
        "--all",
        "--to-source",
    ]);
    assert!(out.contains("replayed:           1"), "{out}");

    let reader: BaseConsumer = env
        .kafka_config()
        .set("group.id", ferry_testkit::unique_name("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("reader");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(fx.source.name(), 1, Offset::Beginning)
        .expect("partition");
    reader.assign(&tpl).expect("assign");
    let message = wait_for(
        "the replayed record in the source topic",
        WITHIN,
        || async {
            reader
                .poll(Duration::from_millis(500))
                .and_then(Result::ok)
                .map(|m| m.detach())
        },
    )
    .await;
    assert_eq!(message.key(), Some(&b"k7"[..]));
    let names: Vec<(String, String)> = message
        .headers()
        .map(|h| {
            h.iter()
                .map(|x| {
                    (
                        x.key.to_owned(),
                        String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(names, [(headers::EVENT_ID.to_owned(), "e7".to_owned())]);
    let again = fx.plugin_ok(&[
        "dlq",
        "replay",
        "--direct",
        CONSUMER,
        "--all",
        "--to-source",
    ]);
    assert!(again.contains("replayed:           0"), "{again}");
}
