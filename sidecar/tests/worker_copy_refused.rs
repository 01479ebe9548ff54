//! A retry or dead-letter copy that Kafka can never accept (here: larger than the tier's and the
//! dead-letter topic's `max.message.bytes`) must not stop the worker: the record gets a bounded,
//! visible outcome — a reference copy in the dead-letter topic, without the payload, naming
//! where the record is and why its copy was refused, counted in a metric — and every other
//! record keeps flowing and is committed. A small `--max-in-flight` makes the old stall show:
//! a record retried for ever pins its partition's watermark, the window fills, and nothing
//! more is admitted.

mod worker;

use std::{sync::Arc, time::Duration};

use ferry_testkit::{TempTopic, http_get, require_env};
use worker::{Target, Topics, envelope, header_of, produce, producer, read_all};

/// The tier's and the dead-letter topic's `max.message.bytes`: far below the records below.
const COPY_TOPIC_MAX_BYTES: &str = "100000";
/// Size of the two big records (the main topic takes them: its limit is Kafka's default).
const BIG: usize = 200_000;
/// Small records after the two big ones.
const SMALL: u64 = 20;

/// The sum of the metric lines starting with `prefix` (name and labels), if there are any.
fn metric(metrics: &str, prefix: &str) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next())
        .filter_map(|v| v.parse::<f64>().ok())
        .reduce(|a, b| a + b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_kafka_refuses_for_good_becomes_a_reference_and_the_worker_goes_on() {
    let env = require_env!();
    let mut topics = Topics::create(env, 1, &[], false).await;
    let tier = format!("{}.{}.retry.1s", topics.main.name, topics.group);
    let limit = [("max.message.bytes", COPY_TOPIC_MAX_BYTES)];
    topics.tiers.push(
        TempTopic::create_with(env, &tier, 1, &limit)
            .await
            .expect("tier"),
    );
    topics.delays.push("1s".to_owned());
    topics.dead_letter = Some(
        TempTopic::create_with(env, &topics.dead_letter_name, 1, &limit)
            .await
            .expect("dead-letter topic"),
    );

    // big-retry fails (503), so it is copied to the tier, which refuses it; poison is not an
    // envelope, so it goes straight to the dead-letter topic, which refuses it too.
    let target = Target::start(Arc::new(|r, _| if r.id == "big-retry" { 503 } else { 200 })).await;
    let p = producer(env);
    produce(&p, &topics.main.name, "poison", &vec![b'x'; BIG]).await;
    let padded = serde_json::to_vec(&serde_json::json!({
        "schema": "test.v1", "event": "test.happened", "id": "big-retry", "ts": 1_700_000_000,
        "key": "big", "data": {"key": "big", "seq": 0, "pad": "y".repeat(BIG)}, "headers": {}
    }))
    .expect("json");
    produce(&p, &topics.main.name, "big", &padded).await;
    let mut ids = Vec::new();
    for i in 0..SMALL {
        let id = format!("s-{i}");
        let key = format!("k{}", i % 4);
        produce(&p, &topics.main.name, &key, &envelope(&id, &key, i / 4)).await;
        ids.push(id);
    }

    let port = ferry_testkit::free_port();
    let metrics_addr = format!("--metrics-addr=127.0.0.1:{port}");
    let mut worker = worker::spawn_worker(
        env,
        "copy-refused",
        &topics,
        &target.url,
        &[
            "--ordering=key",
            "--max-in-flight=4",
            "--retry-attempts=1",
            &metrics_addr,
        ],
    );
    target
        .wait_for(
            Duration::from_secs(60),
            "every small record, behind the two whose copies are refused",
            |d| ids.iter().all(|id| d.contains_key(id)),
        )
        .await;
    worker::wait_committed(
        env,
        &topics.group,
        &topics.main.name,
        &[Some(2 + i64::try_from(SMALL).expect("fits"))],
        "the partition is committed to its end",
    )
    .await;

    let dead = read_all(env, &topics.dead_letter_name, 2, Duration::from_secs(30));
    assert_eq!(dead.len(), 2, "one reference copy per refused record");
    for (offset, reason) in [("0", "poison"), ("1", "target answered 503")] {
        let copy = dead
            .iter()
            .find(|m| header_of(m, "ferry-original-offset").as_deref() == Some(offset))
            .unwrap_or_else(|| panic!("no reference copy of offset {offset}"));
        assert!(
            rdkafka::Message::payload(copy).is_none_or(<[u8]>::is_empty),
            "a reference copy carries no payload"
        );
        assert_eq!(
            header_of(copy, "ferry-original-topic").as_deref(),
            Some(topics.main.name.as_str())
        );
        assert_eq!(
            header_of(copy, "ferry-original-partition").as_deref(),
            Some("0")
        );
        let error = header_of(copy, "ferry-error").unwrap_or_default();
        assert!(error.contains(reason), "ferry-error {error:?}");
        let refused = header_of(copy, "ferry-copy-refused").unwrap_or_default();
        assert!(
            refused.contains("too large"),
            "ferry-copy-refused says why: {refused:?}"
        );
    }
    let (_, metrics) = http_get(port, "/metrics").await.expect("metrics answer");
    assert_eq!(
        metric(
            &metrics,
            "ferry_worker_processed_total{outcome=\"referenced\"}"
        ),
        Some(2.0),
        "{metrics}"
    );
    // The tier copy of big-retry, then the dead-letter copies of both.
    assert_eq!(
        metric(&metrics, "ferry_worker_copies_refused_total"),
        Some(3.0),
        "{metrics}"
    );
    worker
        .terminate(Duration::from_secs(30))
        .await
        .expect("stop");
}

/// The copy producer takes what the dead-letter topic takes (here Kafka's default topic limit,
/// 1,048,588 bytes, above librdkafka's default `message.max.bytes` of 1,000,000): a record of
/// 1,010,000 bytes is dead-lettered whole, with its payload. A record that fits its own topic
/// but not once the `ferry-*` headers are added becomes a reference, and the worker goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_are_sized_to_the_topic_and_headers_past_its_limit_make_a_reference() {
    const FITS: usize = 1_010_000;
    // Fits the main topic (1,048,588 with the batch's overhead), not with the headers added.
    const FITS_ONLY_WITHOUT_HEADERS: usize = 1_048_300;
    let env = require_env!();
    let topics = Topics::create(env, 1, &[], true).await;
    let target = Target::ok().await;
    let p: rdkafka::producer::FutureProducer = env
        .kafka_config()
        .set("acks", "all")
        .set("message.max.bytes", "2000000")
        .create()
        .expect("producer");
    produce(&p, &topics.main.name, "a", &vec![b'x'; FITS]).await;
    produce(
        &p,
        &topics.main.name,
        "b",
        &vec![b'y'; FITS_ONLY_WITHOUT_HEADERS],
    )
    .await;
    let mut ids = Vec::new();
    for i in 0..SMALL {
        let id = format!("s-{i}");
        let key = format!("k{}", i % 4);
        produce(&p, &topics.main.name, &key, &envelope(&id, &key, i / 4)).await;
        ids.push(id);
    }
    let mut worker = worker::spawn_worker(
        env,
        "copy-sized",
        &topics,
        &target.url,
        &["--ordering=key", "--max-in-flight=4"],
    );
    target
        .wait_for(Duration::from_secs(60), "every small record", |d| {
            ids.iter().all(|id| d.contains_key(id))
        })
        .await;
    worker::wait_committed(
        env,
        &topics.group,
        &topics.main.name,
        &[Some(2 + i64::try_from(SMALL).expect("fits"))],
        "the partition is committed to its end",
    )
    .await;
    let dead = read_all(env, &topics.dead_letter_name, 2, Duration::from_secs(30));
    worker
        .terminate(Duration::from_secs(30))
        .await
        .expect("stop");
    assert_eq!(dead.len(), 2, "both poison records dead-lettered");
    let copy_of = |offset: &str| {
        dead.iter()
            .find(|m| header_of(m, "ferry-original-offset").as_deref() == Some(offset))
            .unwrap_or_else(|| panic!("no copy of offset {offset}"))
    };
    let whole = copy_of("0");
    assert_eq!(
        rdkafka::Message::payload(whole).map(<[u8]>::len),
        Some(FITS),
        "the record that fits the dead-letter topic is copied whole"
    );
    assert_eq!(header_of(whole, "ferry-copy-refused"), None);
    let reference = copy_of("1");
    assert!(
        rdkafka::Message::payload(reference).is_none_or(<[u8]>::is_empty),
        "the record too large with its headers is a reference"
    );
    assert!(
        header_of(reference, "ferry-copy-refused").is_some_and(|r| r.contains("too large")),
        "{:?}",
        header_of(reference, "ferry-copy-refused")
    );
}
