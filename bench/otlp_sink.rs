//! The tracing switch of `make bench-relay` and `make bench-worker`: with
//! `FERRY_BENCH_TRACING=on` the measured binary runs with tracing on, exporting every span
//! over OTLP/HTTP to a receiver in the benchmark's process that accepts and drops it (as a
//! collector would, at no cost to the machine beyond reading the request), so a run measures
//! what tracing costs the binary. Off (the default) measures the binary as shipped.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use axum::{Router, body::Bytes, extract::State, http::StatusCode, routing::post};

/// What the sink was sent.
#[derive(Default)]
pub struct Sink {
    requests: AtomicU64,
    bytes: AtomicU64,
}

async fn accept(State(sink): State<Arc<Sink>>, body: Bytes) -> StatusCode {
    sink.requests.fetch_add(1, Ordering::Relaxed);
    sink.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
    StatusCode::OK
}

impl Sink {
    /// With `FERRY_BENCH_TRACING=on`: a running sink and the flag that points the binary at
    /// it; otherwise `None` (tracing off).
    pub async fn from_env() -> Option<(Arc<Sink>, String)> {
        if std::env::var("FERRY_BENCH_TRACING").as_deref() != Ok("on") {
            return None;
        }
        let sink = Arc::new(Sink::default());
        let app = Router::new()
            .route("/v1/traces", post(accept))
            .with_state(sink.clone());
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind the OTLP sink");
        let flag = format!(
            "--otlp-endpoint=http://{}",
            listener.local_addr().expect("address")
        );
        tokio::spawn(async move { axum::serve(listener, app).await.expect("sink serves") });
        Some((sink, flag))
    }

    /// One line for the report: what the binary exported.
    pub fn summary(&self) -> String {
        format!(
            "tracing on: {} OTLP export requests, {:.1} MiB of spans accepted and dropped",
            self.requests.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed) as f64 / 1_048_576.0
        )
    }
}
