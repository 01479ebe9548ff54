//! One trace from the service's commit to its HTTP handler, against the real binaries: outbox
//! rows with a `traceparent` go through the relay, Kafka and the worker to a real HTTP
//! target, while a real OTLP/HTTP receiver (started here, decoding the protobuf) collects the
//! spans the relay and the worker export: the worker's spans in the row's trace, the relay's
//! batch span linked to it. With tracing off nothing is exported and the
//! `traceparent` still reaches the target.

#[path = "relay/support.rs"]
mod support;
mod worker;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, body::Bytes, extract::State, http::StatusCode, routing::post};
use ferry_testkit::{TestEnv, require_env};
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest, common::v1::any_value::Value as AnyValue,
    trace::v1::span::SpanKind,
};
use prost::Message as _;
use support::{TestOutbox, spawn_relay, wait_for};
use worker::{Target, Topics, spawn_worker};

/// One span as the receiver got it, ids in hex.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    name: String,
    kind: i32,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    /// `(trace id, span id)` of each link.
    links: Vec<(String, String)>,
    events: Vec<String>,
    error: bool,
}

/// A real OTLP/HTTP trace receiver on 127.0.0.1 (`POST /v1/traces`, protobuf).
struct Receiver {
    base: String,
    spans: Arc<Mutex<Vec<Received>>>,
    requests: Arc<Mutex<usize>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct Store {
    spans: Arc<Mutex<Vec<Received>>>,
    requests: Arc<Mutex<usize>>,
}

async fn export(State(store): State<Store>, body: Bytes) -> (StatusCode, Vec<u8>) {
    *store.requests.lock().expect("lock") += 1;
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return (StatusCode::BAD_REQUEST, Vec::new());
    };
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let mut spans = store.spans.lock().expect("lock");
    for rs in request.resource_spans {
        let service = rs
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                AnyValue::StringValue(s) => Some(s.clone()),
                _ => None,
            })
            .unwrap_or_default();
        for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
            spans.push(Received {
                service: service.clone(),
                name: span.name,
                kind: span.kind,
                trace_id: hex(&span.trace_id),
                span_id: hex(&span.span_id),
                parent_span_id: hex(&span.parent_span_id),
                links: span
                    .links
                    .iter()
                    .map(|l| (hex(&l.trace_id), hex(&l.span_id)))
                    .collect(),
                events: span.events.into_iter().map(|e| e.name).collect(),
                // STATUS_CODE_ERROR = 2.
                error: span.status.is_some_and(|s| s.code == 2),
            });
        }
    }
    // An empty ExportTraceServiceResponse: everything accepted.
    (StatusCode::OK, Vec::new())
}

impl Receiver {
    async fn start() -> Receiver {
        let store = Store {
            spans: Arc::default(),
            requests: Arc::default(),
        };
        let app = Router::new()
            .route("/v1/traces", post(export))
            .with_state(store.clone());
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("address");
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("receiver serves");
        });
        Receiver {
            base: format!("http://{addr}"),
            spans: store.spans,
            requests: store.requests,
            task,
        }
    }

    fn spans(&self, trace_id: &str) -> Vec<Received> {
        let spans = self.spans.lock().expect("lock");
        spans
            .iter()
            .filter(|s| s.trace_id == trace_id)
            .cloned()
            .collect()
    }

    /// The spans linked to the span `(trace_id, span_id)`.
    fn linking(&self, trace_id: &str, span_id: &str) -> Vec<Received> {
        let spans = self.spans.lock().expect("lock");
        spans
            .iter()
            .filter(|s| s.links.iter().any(|(t, p)| t == trace_id && p == span_id))
            .cloned()
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Inserts one envelope row per `(key, traceparent)` for `topic`, the traceparent in the
/// row's `headers` column as a service writes it.
async fn insert(outbox: &TestOutbox, topic: &str, rows: &[(&str, &str)]) {
    for (key, traceparent) in rows {
        outbox
            .client
            .execute(
                "INSERT INTO outbox (topic, key, payload, headers)
                 VALUES ($1, to_jsonb($2::text),
                    jsonb_build_object('schema', 'test.v1', 'event', 'test.happened',
                        'id', 'ev-' || $2::text, 'ts', 1, 'key', $2::text,
                        'data', jsonb_build_object('key', $2::text, 'seq', 0)),
                    jsonb_build_object('traceparent', $3::text))",
                &[&topic, key, traceparent],
            )
            .await
            .expect("insert");
    }
}

/// A new sampled W3C traceparent: `(traceparent, trace id, span id)`.
fn new_traceparent() -> (String, String, String) {
    let trace = format!("{:032x}", rand::random::<u128>() | 1);
    let span = format!("{:016x}", rand::random::<u64>() | 1);
    (format!("00-{trace}-{span}-01"), trace, span)
}

/// Where the HTTP traceparent of the answered (last) request for `id` points: `(trace, span)`.
fn http_traceparent(target: &Target, id: &str) -> Vec<(String, String)> {
    target
        .requests()
        .iter()
        .filter(|r| r.id == id)
        .map(|r| {
            let tp = &r.headers["traceparent"];
            let parts: Vec<&str> = tp.split('-').collect();
            assert_eq!(parts.len(), 4, "{tp}");
            (parts[1].to_owned(), parts[2].to_owned())
        })
        .collect()
}

async fn run_pipeline(
    env: &TestEnv,
    name: &str,
    rows: &[(&str, &str)],
    target: &Target,
    topics: &Topics,
    tracing: &[&str],
) {
    let outbox = TestOutbox::create(env).await;
    insert(&outbox, &topics.main.name, rows).await;
    let mut relay_args = vec!["--idle-poll-interval=100ms"];
    relay_args.extend_from_slice(tracing);
    let relay = spawn_relay(
        &format!("{name}-relay"),
        env,
        &outbox.url(),
        None,
        &relay_args,
    );
    let mut worker_args = vec![
        "--retry-attempts=2",
        "--retry-backoff-initial=10ms",
        "--retry-backoff-max=50ms",
    ];
    worker_args.extend_from_slice(tracing);
    let mut worker = spawn_worker(
        env,
        &format!("{name}-worker"),
        topics,
        &target.url,
        &worker_args,
    );
    outbox
        .stop_once_settled(relay, Duration::from_secs(60))
        .await;
    let ids: Vec<String> = rows.iter().map(|(k, _)| format!("ev-{k}")).collect();
    target
        .wait_for(Duration::from_secs(60), "every row answered", |_| {
            let answered = target.requests();
            ids.iter().all(|id| answered.iter().any(|r| &r.id == id))
        })
        .await;
    // The dead letter is written before the record counts as done: a drain waits for it.
    let status = worker
        .terminate(Duration::from_secs(30))
        .await
        .expect("stop worker");
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_runs_from_the_outbox_row_to_the_http_handler() {
    let env = require_env!();
    let receiver = Receiver::start().await;
    let topics = Topics::create(env, 1, &[], true).await;
    // `retry` fails once and then succeeds; `bad` is refused for good (dead-lettered).
    let target = Target::start(Arc::new(|r, nth| match (r.key.as_str(), nth) {
        ("retry", 0) => 503,
        ("bad", _) => 422,
        _ => 200,
    }))
    .await;
    let (ok, retry, bad) = (new_traceparent(), new_traceparent(), new_traceparent());
    let endpoint = format!("--otlp-endpoint={}", receiver.base);
    run_pipeline(
        env,
        "trace-on",
        &[("ok", &ok.0), ("retry", &retry.0), ("bad", &bad.0)],
        &target,
        &topics,
        &[&endpoint],
    )
    .await;

    for (key, (_, trace, row_span), attempts) in
        [("ok", &ok, 1), ("retry", &retry, 2), ("bad", &bad, 1)]
    {
        // Both processes flush their spans when they stop; poll for the export to land.
        wait_for(
            &format!("{key}: the relay's and the worker's spans"),
            Duration::from_secs(30),
            || async {
                receiver.spans(trace).len() >= attempts
                    && !receiver.linking(trace, row_span).is_empty()
            },
        )
        .await;
        // The relay's batch span, linked to the row's context (it sends all three rows, in
        // one batch or more).
        let sends = receiver.linking(trace, row_span);
        assert_eq!(
            sends.len(),
            1,
            "{key}: one relay span links to the row: {sends:#?}"
        );
        let send = &sends[0];
        assert_eq!(send.service, "ferry-relay");
        assert_eq!(send.name, format!("send {}", topics.main.name));
        assert_eq!(send.kind, SpanKind::Producer as i32);
        assert!(!send.error, "{key}: every row published: {send:#?}");
        let spans = receiver.spans(trace);
        let processes: Vec<_> = spans
            .iter()
            .filter(|s| s.service == "ferry-worker")
            .collect();
        assert_eq!(
            processes.len(),
            attempts,
            "{key}: a span per attempt, and nothing else in the row's trace: {spans:#?}"
        );
        for p in &processes {
            assert_eq!(p.name, format!("process {}", topics.main.name));
            assert_eq!(p.kind, SpanKind::Consumer as i32);
            assert_eq!(
                &p.parent_span_id, row_span,
                "{key}: the worker span continues the row's traceparent (the Kafka header as written)"
            );
        }
        // Each HTTP request carries the trace, its parent the attempt's span.
        let http = http_traceparent(&target, &format!("ev-{key}"));
        assert_eq!(http.len(), attempts, "{key}: {http:?}");
        for (t, parent) in &http {
            assert_eq!(t, trace, "{key}: the handler sees the row's trace");
            assert!(
                processes.iter().any(|p| &p.span_id == parent),
                "{key}: the request's parent {parent} is an attempt span: {processes:#?}"
            );
        }
        match key {
            "retry" => {
                let failed: Vec<_> = processes.iter().filter(|p| p.error).collect();
                assert_eq!(failed.len(), 1, "{processes:#?}");
                assert_eq!(failed[0].events, ["retry"]);
            }
            "bad" => {
                assert!(processes[0].error, "{processes:#?}");
                assert_eq!(processes[0].events, ["dead_lettered"]);
            }
            _ => assert!(processes.iter().all(|p| !p.error && p.events.is_empty())),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tracing_off_nothing_is_exported_and_the_traceparent_still_arrives() {
    let env = require_env!();
    let receiver = Receiver::start().await;
    let topics = Topics::create(env, 1, &[], true).await;
    let target = Target::ok().await;
    let row = new_traceparent();
    run_pipeline(env, "trace-off", &[("off", &row.0)], &target, &topics, &[]).await;
    let requests = target.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(
        requests[0].headers["traceparent"], row.0,
        "the row's traceparent reaches the handler as written"
    );
    assert_eq!(*receiver.requests.lock().expect("lock"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_sets_a_row_aside_is_an_error_span() {
    let env = require_env!();
    let receiver = Receiver::start().await;
    let topic = ferry_testkit::TempTopic::create(env, 1)
        .await
        .expect("topic");
    let dead_letters = ferry_testkit::TempTopic::create(env, 1)
        .await
        .expect("dead-letter topic");
    let outbox = TestOutbox::create(env).await;
    let good = new_traceparent();
    // One batch: a good row, then a row that is not an envelope (poison, set aside).
    insert(&outbox, topic.name(), &[("good", &good.0)]).await;
    outbox
        .client
        .execute(
            "INSERT INTO outbox (topic, key, payload) VALUES ($1, to_jsonb('bad'::text), '{\"hello\": 1}'::jsonb)",
            &[&topic.name()],
        )
        .await
        .expect("insert poison");
    let endpoint = format!("--otlp-endpoint={}", receiver.base);
    let relay = spawn_relay(
        "trace-poison-relay",
        env,
        &outbox.url(),
        None,
        &[
            "--idle-poll-interval=100ms",
            "--dead-letter-topic",
            dead_letters.name(),
            &endpoint,
        ],
    );
    outbox
        .stop_once_settled(relay, Duration::from_secs(60))
        .await;
    wait_for(
        "the relay's batch span",
        Duration::from_secs(30),
        || async { !receiver.linking(&good.1, &good.2).is_empty() },
    )
    .await;
    let sends = receiver.linking(&good.1, &good.2);
    assert_eq!(sends.len(), 1, "{sends:#?}");
    assert!(
        sends[0].error,
        "a batch that set a row aside is an error: {sends:#?}"
    );
}
