//! Delivery as a CloudEvent and the dead-letter path, against the real binary, Kafka and an
//! HTTP target.

mod worker;

use std::{sync::Arc, time::Duration};

use ferry_testkit::{assert_chart_metrics_exposed, http_get, require_env};
use worker::{
    Target, Topics, header_of, produce, produce_events, producer, read_all, spawn_worker,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_every_event_as_a_cloudevent_and_commits() {
    let env = require_env!();
    let topics = Topics::create(env, 3, &[], true).await;
    let target = Target::ok().await;
    let ids = produce_events(env, &topics.main.name, "d", 5_000, 50).await;
    let mut worker = spawn_worker(env, "delivery", &topics, &target.url, &["--ordering=key"]);
    let started = std::time::Instant::now();
    target
        .wait_for(Duration::from_secs(60), "all 5000 delivered", |d| {
            ids.iter().all(|id| d.contains_key(id))
        })
        .await;
    eprintln!("5000 events in {:?}", started.elapsed());
    let status = worker
        .terminate(Duration::from_secs(30))
        .await
        .expect("stop");
    assert!(
        status.is_some_and(|s| s.success()),
        "SIGTERM drains and exits 0: {status:?}"
    );

    let requests = target.requests();
    let first = requests
        .iter()
        .find(|r| r.id == "d-0")
        .expect("d-0 delivered");
    let h = &first.headers;
    assert_eq!(h["ce-specversion"], "1.0");
    assert_eq!(h["ce-id"], "d-0");
    assert_eq!(h["ce-type"], "test.happened");
    assert_eq!(
        h["ce-source"],
        format!("/ferry/topics/{}", topics.main.name)
    );
    assert_eq!(h["ce-time"], "2023-11-14T22:13:20.000Z");
    assert_eq!(h["ferry-topic"], topics.main.name);
    assert_eq!(h["ferry-attempt"], "1");
    assert!(h["traceparent"].starts_with("00-"), "{h:?}");
    assert!(h.contains_key("ferry-partition") && h.contains_key("ferry-offset"));
    assert_eq!(h["content-type"], "application/json");

    // Per-key order holds without failures too.
    let mut last: std::collections::HashMap<String, u64> = Default::default();
    for r in requests.iter().filter(|r| r.status == 200) {
        if let Some(prev) = last.insert(r.key.clone(), r.seq) {
            assert!(r.seq > prev, "key {} went {prev} -> {}", r.key, r.seq);
        }
    }
    // Everything is committed after the drain: 5000 records over 3 partitions.
    let committed = worker::committed(env, &topics.group, &topics.main.name, 3);
    let total: i64 = committed.iter().map(|c| c.expect("committed")).sum();
    assert_eq!(total, 5_000, "{committed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_failure_and_poison_go_to_the_dead_letter_topic_with_headers() {
    let env = require_env!();
    let topics = Topics::create(env, 1, &[], true).await;
    let target = Target::start(Arc::new(|r, _| if r.key == "bad" { 422 } else { 200 })).await;
    let p = producer(env);
    produce(
        &p,
        &topics.main.name,
        "good",
        &worker::envelope("g-1", "good", 0),
    )
    .await;
    produce(
        &p,
        &topics.main.name,
        "bad",
        &worker::envelope("b-1", "bad", 0),
    )
    .await;
    produce(&p, &topics.main.name, "good", b"{this is not an envelope").await;
    produce(
        &p,
        &topics.main.name,
        "good",
        &worker::envelope("g-2", "good", 1),
    )
    .await;
    let mut worker = spawn_worker(env, "dead-letter", &topics, &target.url, &[]);
    target
        .wait_for(Duration::from_secs(60), "g-1 and g-2", |d| {
            d.contains_key("g-1") && d.contains_key("g-2")
        })
        .await;
    let dead = read_all(env, &topics.dead_letter_name, 2, Duration::from_secs(30));
    assert_eq!(dead.len(), 2, "the 422 and the poison record");
    let by_offset = |o: &str| {
        dead.iter()
            .find(|m| header_of(m, "ferry-original-offset").as_deref() == Some(o))
            .expect("dead letter present")
    };
    let bad = by_offset("1");
    assert_eq!(
        header_of(bad, "ferry-error").as_deref(),
        Some("target answered 422 Unprocessable Entity")
    );
    assert_eq!(
        header_of(bad, "ferry-original-topic").as_deref(),
        Some(topics.main.name.as_str())
    );
    assert_eq!(
        header_of(bad, "ferry-original-partition").as_deref(),
        Some("0")
    );
    assert_eq!(
        header_of(bad, "ferry-original-offset").as_deref(),
        Some("1")
    );
    assert_eq!(
        header_of(bad, "ferry-attempts").as_deref(),
        Some("1"),
        "a 4xx is not retried"
    );
    assert_eq!(
        header_of(bad, "ferry-group").as_deref(),
        Some(topics.group.as_str())
    );
    assert!(
        header_of(bad, "ferry-failed-at").is_some_and(|t| humantime::parse_rfc3339(&t).is_ok())
    );
    let poison = by_offset("2");
    assert!(
        header_of(poison, "ferry-error")
            .is_some_and(|e| e.starts_with("poison: payload is not valid JSON")),
        "{:?}",
        header_of(poison, "ferry-error")
    );
    assert_eq!(
        header_of(poison, "ferry-original-offset").as_deref(),
        Some("2")
    );
    assert_eq!(
        target.requests().iter().filter(|r| r.key == "bad").count(),
        1
    );
    worker
        .terminate(Duration::from_secs(30))
        .await
        .expect("stop");
    assert_eq!(
        worker::committed(env, &topics.group, &topics.main.name, 1),
        [Some(4)]
    );
}

/// The value of the metric line starting with `prefix` (name and labels), if there is one.
fn metric(metrics: &str, prefix: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// /healthz, /readyz and /metrics of a running worker: outcomes counted as they happened
/// (delivered and dead-lettered), one latency observation per attempt, nothing in flight once
/// idle, and a lag of 0 per partition once everything is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_metrics_tell_what_the_worker_did() {
    const EVENTS: u64 = 30;
    let env = require_env!();
    let topics = Topics::create(env, 2, &[], true).await;
    // Every fifth event is refused for good: dead-lettered after one attempt.
    let target = Target::start(Arc::new(
        |r: &worker::Received, _| {
            if r.seq.is_multiple_of(5) { 422 } else { 200 }
        },
    ))
    .await;
    let port = ferry_testkit::free_port();
    let metrics_addr = format!("--metrics-addr=127.0.0.1:{port}");
    let ids = produce_events(env, &topics.main.name, "m", EVENTS, 10).await;
    let mut worker = spawn_worker(env, "metrics", &topics, &target.url, &[&metrics_addr]);
    target
        .wait_for(Duration::from_secs(60), "every event answered", |_| {
            target.requests().len() >= ids.len()
        })
        .await;
    let refused =
        u64::try_from(target.requests().iter().filter(|r| r.status == 422).count()).expect("fits");
    assert!(refused > 0, "the test refuses some events");

    assert_eq!(http_get(port, "/healthz").await.map(|(s, _)| s), Some(200));
    assert_eq!(http_get(port, "/readyz").await.map(|(s, _)| s), Some(200));
    // Lag comes from librdkafka's statistics, every 5 s.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let metrics = loop {
        let (status, body) = http_get(port, "/metrics").await.expect("metrics answer");
        assert_eq!(status, 200);
        let lags: Vec<f64> = (0..2)
            .filter_map(|p| {
                metric(
                    &body,
                    &format!(
                        "ferry_worker_lag_records{{topic=\"{}\",partition=\"{p}\"}}",
                        topics.main.name
                    ),
                )
            })
            .collect();
        let delivered = metric(&body, "ferry_worker_processed_total{outcome=\"delivered\"}");
        let dead = metric(
            &body,
            "ferry_worker_processed_total{outcome=\"dead_lettered\"}",
        );
        if lags == [0.0, 0.0]
            && delivered == Some((EVENTS - refused) as f64)
            && dead == Some(refused as f64)
        {
            break body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "metrics never showed the run: {body}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(
        metric(&metrics, "ferry_worker_delivery_duration_seconds_count"),
        Some(EVENTS as f64),
        "one observation per attempt: {metrics}"
    );
    assert_eq!(
        metric(&metrics, "ferry_worker_in_flight_records"),
        Some(0.0),
        "{metrics}"
    );
    // Every worker metric the chart's alerts and dashboard query is one this worker exposes.
    assert_chart_metrics_exposed("ferry_worker_", &metrics);
    let status = worker
        .terminate(Duration::from_secs(30))
        .await
        .expect("stop");
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
}

/// `data` is delivered byte for byte as the producer wrote it: integers beyond 2^53 and
/// beyond u64, decimals a double cannot hold, a number beyond a double's range, and object
/// keys in their written (unsorted) order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_and_key_order_in_data_are_delivered_exactly_as_written() {
    let env = require_env!();
    let topics = Topics::create(env, 1, &[], true).await;
    let target = Target::ok().await;
    let exact = [
        (
            "n-1",
            r#"{"z":1,"big":12345678901234567890,"p53":9007199254740993,"dec":0.1000000000000000055511151231257827,"a":[1.0,2.50,-0.0,1E+2],"neg":-12345678901234567890123}"#,
        ),
        ("n-2", r#"{"huge":1e400,"tiny":1e-400,"m":{"y":2,"x":1}}"#),
    ];
    let p = producer(env);
    for (id, data) in exact {
        let payload = format!(
            r#"{{"schema":"test.v1","event":"test.happened","id":"{id}","ts":1700000000,"key":"k","data":{data},"headers":{{}}}}"#
        );
        produce(&p, &topics.main.name, "k", payload.as_bytes()).await;
    }
    let mut worker = spawn_worker(env, "numbers", &topics, &target.url, &["--ordering=key"]);
    for (id, data) in exact {
        target
            .wait_for(Duration::from_secs(60), id, |d| d.contains_key(id))
            .await;
        let body = target
            .requests()
            .into_iter()
            .find(|r| r.id == id)
            .expect("delivered")
            .body;
        assert_eq!(
            String::from_utf8_lossy(&body),
            data,
            "{id}'s data was not delivered as written"
        );
    }
    worker
        .terminate(Duration::from_secs(30))
        .await
        .expect("stop");
}
