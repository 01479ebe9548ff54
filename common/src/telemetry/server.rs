//! The one telemetry HTTP server of every Ferry binary: `/healthz` (the process is alive),
//! `/readyz` (it is doing its job, or ready to take over) and `/metrics` (Prometheus text
//! format). The operator and each sidecar mode register their own metrics in a [`Registry`]
//! and flip a [`Health`] as their state changes; the serving is the same for all of them, so
//! a kubelet probe or a scrape config written for one works for every other.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use prometheus_client::{encoding::text::encode, registry::Registry};

/// The content type of `/metrics`: OpenMetrics text, what prometheus-client encodes.
const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Errors of the telemetry server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("telemetry server failed")]
    Serve(#[source] std::io::Error),
}

/// Readiness as the process reports it for `/readyz`; liveness is the server answering at all.
/// Clones share one flag.
#[derive(Debug, Clone, Default)]
pub struct Health {
    ready: Arc<AtomicBool>,
}

impl Health {
    /// Marks the process ready (or not) for `/readyz`.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}

#[derive(Clone)]
struct AppState {
    registry: Arc<Registry>,
    health: Health,
}

/// A bound telemetry server; [`TelemetryServer::serve`] runs it until `shutdown` completes.
pub struct TelemetryServer {
    listener: tokio::net::TcpListener,
    state: AppState,
}

impl TelemetryServer {
    /// Binds `addr` (port 0 picks a free port; see [`TelemetryServer::local_addr`]).
    pub async fn bind(
        addr: SocketAddr,
        registry: impl Into<Arc<Registry>>,
        health: Health,
    ) -> Result<Self, Error> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind { addr, source })?;
        Ok(Self::from_listener(listener, registry, health))
    }

    /// Serves on a listener bound elsewhere (to report its address before serving, say).
    pub fn from_listener(
        listener: tokio::net::TcpListener,
        registry: impl Into<Arc<Registry>>,
        health: Health,
    ) -> Self {
        Self {
            listener,
            state: AppState {
                registry: registry.into(),
                health,
            },
        }
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Serves until `shutdown` completes.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let router = Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .with_state(self.state);
        axum::serve(self.listener, router)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(Error::Serve)
    }
}

/// The metrics of `registry` in the text format `/metrics` serves.
pub fn render(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut body = String::new();
    encode(&mut body, registry)?;
    Ok(body)
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if state.health.is_ready() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    match render(&state.registry) {
        Ok(body) => (
            StatusCode::OK,
            [(axum::http::header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
            body,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_testkit::http_get;
    use prometheus_client::metrics::counter::Counter;

    #[tokio::test]
    async fn serves_health_readiness_and_metrics_over_real_http() {
        let mut registry = Registry::with_prefix("ferry");
        let counter = Counter::<u64>::default();
        registry.register("test_events", "events seen by the test", counter.clone());
        counter.inc_by(7);
        let health = Health::default();
        let server = TelemetryServer::bind(([127, 0, 0, 1], 0).into(), registry, health.clone())
            .await
            .expect("bind");
        let port = server.local_addr().expect("bound address").port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(async move {
            let _ = stopped.await;
        }));

        assert_eq!(http_get(port, "/healthz").await, Some((200, "ok".into())));
        assert_eq!(
            http_get(port, "/readyz").await,
            Some((503, "not ready".into()))
        );
        health.set_ready(true);
        assert_eq!(http_get(port, "/readyz").await, Some((200, "ready".into())));
        let (status, metrics) = http_get(port, "/metrics").await.expect("answers");
        assert_eq!(status, 200);
        assert!(metrics.contains("ferry_test_events_total 7"), "{metrics}");

        let _ = stop.send(());
        task.await.expect("join").expect("clean shutdown");
    }
}
