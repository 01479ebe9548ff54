//! One HTTP delivery: a Kafka record as a CloudEvent in binary content mode (DESIGN §5), and
//! what the service's answer means.
//!
//! The envelope's `data` is the body (`content-type: application/json`); its attributes are
//! headers: `ce-specversion: 1.0`, `ce-id` (envelope `id`), `ce-type` (`event`), `ce-source`
//! (`/ferry/topics/<topic>`), `ce-time` (`ts`), plus `ferry-topic`, `ferry-partition`,
//! `ferry-offset`, `ferry-attempt` and `traceparent`. Binary mode is five headers, so this
//! writes them itself rather than pulling in the CloudEvents SDK, whose HTTP binding wants
//! reqwest's default (TLS) features. The client is hyper-util's pooled HTTP/1.1 client: reqwest
//! on top of it re-parsed the URL of every response for its redirect support (visible in
//! profiles of `make bench-worker`), and a worker must not follow redirects anyway — a POST
//! redirected with 301/302/303 becomes a GET without the event. A 3xx is a permanent failure.
//!
//! One idea, one file: about 280 lines of code (the client, the request, and the pure
//! `classify`/`retry_after`/`ce_time`/`traceparent` of the answer); the rest are its tests,
//! half of them against a real local HTTP server.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{
    HeaderMap, Method, Request, StatusCode, Uri,
    header::{CONTENT_TYPE, HeaderValue, InvalidHeaderValue, RETRY_AFTER},
};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioTimer},
};
use serde_json::Value;
use tokio::sync::Semaphore;

use crate::envelope::Envelope;

/// Errors building the HTTP client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--target-url {url:?} is not a URL: {reason}")]
    Url { url: String, reason: String },
}

/// `Result` of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The most of an answer's body the worker reads to keep its connection: services acknowledge
/// with a few bytes; a bigger body costs the connection rather than memory.
const ANSWER_BODY_LIMIT: usize = 64 * 1024;

/// What the service's answer (or its absence) means for the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx: done.
    Delivered,
    /// 429, 5xx, timeout or connection error: try again, not before `retry_after` if given.
    Retry {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// Any other answer: retrying cannot help; dead-letter it now.
    Permanent { reason: String },
}

/// Where a record came from, for the `ferry-*` headers.
#[derive(Debug, Clone)]
pub struct Position<'a> {
    /// The topic read (the main topic, also for records read back from a retry tier).
    pub topic: &'a str,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
}

/// The pooled client and where it posts.
#[derive(Debug, Clone)]
pub struct Delivery {
    client: Client<HttpConnector, Full<Bytes>>,
    /// Parsed once: parsing the URL per request showed in profiles.
    url: Uri,
    /// How long a request may take, the answer read in full included (`--timeout`).
    timeout: Duration,
    /// One permit per request on the wire: a request waits for a permit before it is sent (not
    /// counted in its `--timeout`), so at most this many are sent at once, and hyper keeps
    /// about this many connections (and their buffers): it keeps at most this many idle, and
    /// opens another only in the moment between a response and its connection's return to
    /// the pool.
    connections: Arc<Semaphore>,
}

/// The CloudEvent and Ferry header names, made once instead of parsed per request.
mod names {
    use hyper::header::HeaderName;

    pub const SPECVERSION: HeaderName = HeaderName::from_static("ce-specversion");
    pub const ID: HeaderName = HeaderName::from_static("ce-id");
    pub const TYPE: HeaderName = HeaderName::from_static("ce-type");
    pub const SOURCE: HeaderName = HeaderName::from_static("ce-source");
    pub const DATASCHEMA: HeaderName = HeaderName::from_static("ce-dataschema");
    pub const TIME: HeaderName = HeaderName::from_static("ce-time");
    pub const TOPIC: HeaderName = HeaderName::from_static("ferry-topic");
    pub const PARTITION: HeaderName = HeaderName::from_static("ferry-partition");
    pub const OFFSET: HeaderName = HeaderName::from_static("ferry-offset");
    pub const ATTEMPT: HeaderName = HeaderName::from_static("ferry-attempt");
    pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
}

impl Delivery {
    /// A client with at most `max_connections` keep-alive connections and a per-request
    /// `timeout`.
    pub fn new(url: String, timeout: Duration, max_connections: usize) -> Result<Self> {
        let refuse = |reason: String| Error::Url {
            url: url.clone(),
            reason,
        };
        let parsed: Uri = url
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| refuse(e.to_string()))?;
        match parsed.scheme_str() {
            Some("http") => {}
            Some(other) => return Err(refuse(format!("scheme {other} is not served (http only)"))),
            None => return Err(refuse("no scheme (http://...)".to_owned())),
        }
        if parsed.host().is_none() {
            return Err(refuse("no host".to_owned()));
        }
        let mut connector = HttpConnector::new();
        // Small requests and answers: Nagle's algorithm would hold each for an ACK.
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(max_connections)
            .build(connector);
        Ok(Self {
            client,
            url: parsed,
            timeout,
            connections: Arc::new(Semaphore::new(max_connections.max(1))),
        })
    }

    /// POSTs one event and classifies the outcome.
    pub async fn deliver(
        &self,
        envelope: &Envelope,
        position: &Position<'_>,
        attempt: u32,
        traceparent: &str,
    ) -> Verdict {
        // The permit first: a delivery waiting for a connection then holds none of the body,
        // headers and request built below (at --max-in-flight 1000 over 64 connections most
        // deliveries wait here). The semaphore is never closed, so this always yields a permit.
        let _connection = self.connections.acquire().await;
        // `data` as the producer wrote it (see `crate::envelope`).
        let body = Bytes::copy_from_slice(envelope.data.get().as_bytes());
        let text = |v: &str| HeaderValue::from_str(v);
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.url.clone();
        let headers = (|h: &mut HeaderMap| -> Result<(), InvalidHeaderValue> {
            h.reserve(12);
            h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            h.insert(names::SPECVERSION, HeaderValue::from_static("1.0"));
            h.insert(names::ID, text(&envelope.id)?);
            h.insert(names::TYPE, text(&envelope.event)?);
            h.insert(
                names::SOURCE,
                text(&format!("/ferry/topics/{}", position.topic))?,
            );
            h.insert(names::DATASCHEMA, text(&envelope.schema)?);
            h.insert(names::TOPIC, text(position.topic)?);
            h.insert(names::PARTITION, HeaderValue::from(position.partition));
            h.insert(names::OFFSET, HeaderValue::from(position.offset));
            h.insert(names::ATTEMPT, HeaderValue::from(attempt));
            h.insert(names::TRACEPARENT, text(traceparent)?);
            if let Some(time) = ce_time(&envelope.ts) {
                h.insert(names::TIME, text(&time)?);
            }
            Ok(())
        })(request.headers_mut());
        if let Err(e) = headers {
            return Verdict::Permanent {
                reason: format!("an envelope attribute is not a valid HTTP header: {e}"),
            };
        }
        // Boxed: the request's future is the largest part of a delivery task, and most tasks
        // wait for a connection above without it (see `Context::process`).
        let deadline = tokio::time::Instant::now() + self.timeout;
        let answer = Box::pin(tokio::time::timeout_at(
            deadline,
            self.client.request(request),
        ))
        .await;
        match answer {
            Ok(Ok(response)) => {
                let verdict = classify(response.status(), response.headers());
                // The verdict is in the status line and headers; the body is read (and
                // dropped) only so that hyper may reuse the connection, which it closes
                // when a body is left unread.
                let body = Limited::new(response.into_body(), ANSWER_BODY_LIMIT).collect();
                let _ = Box::pin(tokio::time::timeout_at(deadline, body)).await;
                verdict
            }
            Ok(Err(e)) => Verdict::Retry {
                reason: format!("delivery failed: {}", ferry_common::errors::chain(&e)),
                retry_after: None,
            },
            Err(_) => Verdict::Retry {
                reason: "delivery timed out".to_owned(),
                retry_after: None,
            },
        }
    }
}

/// Maps a status (and `Retry-After`) to a verdict.
pub fn classify(status: StatusCode, headers: &HeaderMap) -> Verdict {
    if status.is_success() {
        return Verdict::Delivered;
    }
    let reason = format!("target answered {status}");
    if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        let retry_after = headers
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| retry_after(v, SystemTime::now()));
        Verdict::Retry {
            reason,
            retry_after,
        }
    } else {
        Verdict::Permanent { reason }
    }
}

/// `Retry-After` as delay-seconds or an HTTP-date (RFC 9110 §10.2.3).
pub fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// `ce-time` from the envelope's `ts`: Unix seconds become RFC 3339, strings pass through.
pub fn ce_time(ts: &Value) -> Option<String> {
    match ts {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => {
            let secs = n.as_f64()?;
            if !(0.0..=253_402_300_799.0).contains(&secs) {
                return None;
            }
            let t = SystemTime::UNIX_EPOCH + Duration::from_secs_f64(secs);
            Some(humantime::format_rfc3339_millis(t).to_string())
        }
        _ => None,
    }
}

/// A W3C `traceparent`: the envelope's (`headers.traceparent`), else the Kafka header's, else
/// a new sampled trace so the service can still correlate its logs.
pub fn traceparent(envelope: &Envelope, kafka_header: Option<&str>) -> String {
    envelope
        .headers
        .get("traceparent")
        .and_then(Value::as_str)
        .or(kafka_header)
        .map(str::to_owned)
        .unwrap_or_else(|| {
            let trace: u128 = rand::random();
            let span: u64 = rand::random();
            format!("00-{trace:032x}-{span:016x}-01")
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A minimal event to deliver.
    fn an_event() -> Envelope {
        Envelope::from_value(json!({"schema":"s","event":"x","id":"1","ts":1})).expect("valid")
    }

    const POSITION: Position<'static> = Position {
        topic: "t",
        partition: 0,
        offset: 0,
    };

    /// Serves `app` on a free local port, with each request's peer address; returns its URL.
    async fn serve(app: axum::Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .await
            .expect("serve")
        });
        url
    }

    #[test]
    fn statuses_map_to_verdicts() {
        let none = HeaderMap::new();
        assert_eq!(classify(StatusCode::OK, &none), Verdict::Delivered);
        assert_eq!(classify(StatusCode::NO_CONTENT, &none), Verdict::Delivered);
        assert!(matches!(
            classify(StatusCode::BAD_REQUEST, &none),
            Verdict::Permanent { .. }
        ));
        assert!(matches!(
            classify(StatusCode::NOT_FOUND, &none),
            Verdict::Permanent { .. }
        ));
        // Never followed: a redirected POST would arrive as a GET without the event.
        assert_eq!(
            classify(StatusCode::FOUND, &none),
            Verdict::Permanent {
                reason: "target answered 302 Found".to_owned()
            }
        );
        assert!(matches!(
            classify(StatusCode::SERVICE_UNAVAILABLE, &none),
            Verdict::Retry {
                retry_after: None,
                ..
            }
        ));
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "7".parse().expect("valid"));
        assert_eq!(
            classify(StatusCode::TOO_MANY_REQUESTS, &h),
            Verdict::Retry {
                reason: "target answered 429 Too Many Requests".to_owned(),
                retry_after: Some(Duration::from_secs(7))
            }
        );
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(retry_after("120", now), Some(Duration::from_secs(120)));
        // RFC 9110's example date is 784111777 s after the epoch.
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:49:47 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:49:27 GMT", now),
            Some(Duration::ZERO),
            "a date in the past means now"
        );
        assert_eq!(retry_after("soon", now), None);
    }

    /// `--max-connections` holds: however many deliveries run at once, at most that many
    /// requests are on the wire, and connections stay near that many, over real HTTP.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_are_capped() {
        use std::{
            collections::HashSet,
            net::SocketAddr,
            sync::{
                Mutex,
                atomic::{AtomicUsize, Ordering},
            },
        };

        use axum::{
            Router,
            extract::{ConnectInfo, State},
            routing::post,
        };

        #[derive(Default)]
        struct Seen {
            now: AtomicUsize,
            most: AtomicUsize,
            peers: Mutex<HashSet<SocketAddr>>,
        }
        async fn slow(
            State(seen): State<Arc<Seen>>,
            ConnectInfo(peer): ConnectInfo<SocketAddr>,
        ) -> StatusCode {
            let now = seen.now.fetch_add(1, Ordering::SeqCst) + 1;
            seen.most.fetch_max(now, Ordering::SeqCst);
            seen.peers.lock().expect("lock").insert(peer);
            // Long enough that requests would pile up on the wire if nothing capped them.
            tokio::time::sleep(Duration::from_millis(20)).await;
            seen.now.fetch_sub(1, Ordering::SeqCst);
            StatusCode::NO_CONTENT
        }

        const CAP: usize = 3;
        const DELIVERIES: usize = 40;
        let seen = Arc::new(Seen::default());
        let app = Router::new()
            .route("/", post(slow))
            .with_state(seen.clone());
        let url = serve(app).await;
        let delivery = Delivery::new(url, Duration::from_secs(10), CAP).expect("client");
        let envelope = an_event();
        let verdicts = futures::future::join_all(
            (0..DELIVERIES).map(|_| delivery.deliver(&envelope, &POSITION, 1, "00-a-b-01")),
        )
        .await;
        assert!(
            verdicts.iter().all(|v| *v == Verdict::Delivered),
            "{verdicts:?}"
        );
        let most = seen.most.load(Ordering::SeqCst);
        let peers = seen.peers.lock().expect("lock").len();
        assert!(most <= CAP, "{most} requests at once with a cap of {CAP}");
        // hyper hands a connection back to its pool a moment after the response, so a request
        // let through in that moment may open one more (the idle cap closes it again): a few
        // more than the cap, never one per delivery. On a loaded machine that moment is longer
        // (7 of 40 were seen with all unit tests running on 2 busy cores), hence 4x.
        assert!(
            peers <= 4 * CAP,
            "{peers} connections for {DELIVERIES} deliveries with a cap of {CAP}"
        );
        // The cap is a cap, not a queue of one: the deliveries did run side by side.
        assert_eq!(most, CAP, "never more than one request at a time");
    }

    /// A service that is not listening is a retry, and the reason says why (hyper-util's own
    /// message names only the stage that failed).
    #[tokio::test]
    async fn a_refused_connection_is_a_retry_with_the_cause() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/", listener.local_addr().expect("addr"));
        drop(listener);
        let delivery = Delivery::new(url, Duration::from_secs(10), 1).expect("client");
        let envelope = an_event();
        match delivery.deliver(&envelope, &POSITION, 1, "00-a-b-01").await {
            Verdict::Retry {
                reason,
                retry_after: None,
            } => assert!(reason.contains("refused"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }

    /// A service that accepts the connection but never answers is a retry once `--timeout`
    /// passed, however long the service would take.
    #[tokio::test]
    async fn a_silent_service_times_out_into_a_retry() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/", listener.local_addr().expect("addr"));
        // Accepts and holds connections without reading or answering.
        let silent = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        let delivery = Delivery::new(url, Duration::from_millis(300), 1).expect("client");
        let envelope = an_event();
        let started = std::time::Instant::now();
        let verdict = tokio::time::timeout(
            Duration::from_secs(10),
            delivery.deliver(&envelope, &POSITION, 1, "00-a-b-01"),
        )
        .await
        .expect("the delivery gave up by itself");
        let took = started.elapsed();
        silent.abort();
        assert_eq!(
            verdict,
            Verdict::Retry {
                reason: "delivery timed out".to_owned(),
                retry_after: None
            }
        );
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_secs(5),
            "gave up after {took:?}"
        );
    }

    /// A service that answers with a body hyper has not read along with the status line keeps
    /// its connection: deliveries one after another reuse one connection instead of opening
    /// one each (they did open one each before the worker read the body).
    #[tokio::test]
    async fn answers_with_a_body_keep_their_connection() {
        use std::{collections::HashSet, net::SocketAddr, sync::Mutex};

        use axum::{
            Router,
            extract::{ConnectInfo, State},
            routing::post,
        };

        async fn accept(
            State(peers): State<Arc<Mutex<HashSet<SocketAddr>>>>,
            ConnectInfo(peer): ConnectInfo<SocketAddr>,
        ) -> (StatusCode, String) {
            peers.lock().expect("lock").insert(peer);
            // Larger than what hyper reads with the status line, so it is left unread
            // unless the worker reads it.
            (
                StatusCode::OK,
                format!("{{\"echo\": \"{}\"}}", "x".repeat(32 * 1024)),
            )
        }

        let peers = Arc::new(Mutex::new(HashSet::new()));
        let app = Router::new()
            .route("/", post(accept))
            .with_state(peers.clone());
        let url = serve(app).await;
        let delivery = Delivery::new(url, Duration::from_secs(10), 4).expect("client");
        let envelope = an_event();
        for _ in 0..10 {
            let verdict = delivery.deliver(&envelope, &POSITION, 1, "00-a-b-01").await;
            assert_eq!(verdict, Verdict::Delivered);
        }
        let peers = peers.lock().expect("lock").len();
        assert_eq!(
            peers, 1,
            "10 deliveries one after another opened {peers} connections"
        );
    }

    #[test]
    fn target_urls_are_checked_at_start() {
        for bad in [
            "localhost:8080/events",
            "https://svc/events",
            "http:///events",
            "not a url",
        ] {
            let refused = Delivery::new(bad.to_owned(), Duration::from_secs(1), 1)
                .expect_err(bad)
                .to_string();
            assert!(refused.contains(bad), "{refused}");
        }
        assert!(
            Delivery::new(
                "http://svc:8080/events".to_owned(),
                Duration::from_secs(1),
                1
            )
            .is_ok()
        );
    }

    #[test]
    fn ce_time_formats() {
        assert_eq!(
            ce_time(&json!(1_690_000_000)),
            Some("2023-07-22T04:26:40.000Z".to_owned())
        );
        assert_eq!(
            ce_time(&json!("2024-01-01T00:00:00Z")),
            Some("2024-01-01T00:00:00Z".to_owned())
        );
        assert_eq!(ce_time(&json!(null)), None);
        assert_eq!(ce_time(&json!(-5)), None);
    }

    #[test]
    fn traceparent_is_carried_or_made() {
        let mut e = an_event();
        let made = traceparent(&e, None);
        assert_eq!(made.len(), 55, "{made}");
        assert!(made.starts_with("00-") && made.ends_with("-01"));
        assert_eq!(traceparent(&e, Some("00-a-b-01")), "00-a-b-01");
        e.headers = json!({"traceparent": "00-env-span-01"});
        assert_eq!(traceparent(&e, Some("00-a-b-01")), "00-env-span-01");
    }
}
