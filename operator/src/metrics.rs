//! The operator's Prometheus metrics. They are served (with `/healthz` and `/readyz`) by the
//! telemetry server every Ferry binary shares, [`ferry_common::telemetry::server`].
//! Reconcile durations are measured by a drop guard, so every exit path of a reconcile is
//! counted (the guard also holds the reconcile's span while tracing is on); error variants become bounded `error` labels.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use ferry_common::{
    otel,
    telemetry::server::{self, Health, TelemetryServer},
};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

/// Labels of the reconcile counters: which controller, and how it ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    /// The controller, by the kind it reconciles: `EventTopic`, `EventConsumer`, or `Identity`
    /// (the identity controller's pass over the whole scope).
    pub kind: &'static str,
    /// `ready`, `progressing`, `stalled`, `retrying` or `error`.
    pub outcome: &'static str,
}

/// Labels of the error counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// The controller, as in [`ReconcileLabels::kind`].
    pub kind: &'static str,
    /// The error variant's `metric_label()`.
    pub error: &'static str,
}

/// Labels of the duration histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// The controller, as in [`ReconcileLabels::kind`].
    pub kind: &'static str,
}

/// Labels of the consumer lag gauge: one series per EventConsumer (as kube-state-metrics has
/// one per object), never per partition.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConsumerLabels {
    pub namespace: String,
    pub consumer: String,
}

/// Labels of the admission counters: the pod's namespace (bounded like the consumer gauges:
/// one series per team, never per pod) and how the review ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdmissionLabels {
    pub namespace: String,
    /// [`Admission::label`].
    pub outcome: &'static str,
}

/// How the webhook answered a review.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Sidecars were added.
    Injected,
    /// Allowed as it was: not a CREATE, already injected, or nothing asked for.
    Unchanged,
    /// Refused: a bad `ferry.dev/*` annotation, or a patch that could not be encoded. The pod
    /// does not start, so a team is waiting on this.
    Denied,
    /// The review itself could not be read (an API server that speaks another version).
    Invalid,
}

impl Admission {
    pub fn label(self) -> &'static str {
        match self {
            Admission::Injected => "injected",
            Admission::Unchanged => "unchanged",
            Admission::Denied => "denied",
            Admission::Invalid => "invalid",
        }
    }
}

/// Every metric of the operator, registered in one registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    reconciles: Family<ReconcileLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    durations: Family<KindLabels, Histogram>,
    leader: Gauge,
    consumer_lag: Family<ConsumerLabels, Gauge>,
    consumer_dead_letters: Family<ConsumerLabels, Gauge>,
    admissions: Family<AdmissionLabels, Counter>,
    admission_warnings: Family<NamespaceLabels, Counter>,
    admission_durations: Histogram,
    health: Health,
}

/// Labels of a per-namespace counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NamespaceLabels {
    pub namespace: String,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers the metrics under the `ferry_operator` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("ferry_operator");
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles finished, by kind and outcome",
            reconciles.clone(),
        );
        let errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Reconciles that failed with an error, by kind and error",
            errors.clone(),
        );
        // 5 ms .. ~40 s: a batched admin call takes milliseconds, a timed-out one 30 s.
        let durations = Family::<KindLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.005, 2.0, 14,
            ))
        });
        registry.register(
            "reconcile_duration_seconds",
            "How long reconciles take, by kind",
            durations.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease and runs the controllers",
            leader.clone(),
        );
        let consumer_lag = Family::<ConsumerLabels, Gauge>::default();
        registry.register(
            "consumer_lag_records",
            "Records not yet processed by an EventConsumer's group, at the last lag round",
            consumer_lag.clone(),
        );
        let consumer_dead_letters = Family::<ConsumerLabels, Gauge>::default();
        registry.register(
            "consumer_dead_letter_records",
            "Records an EventConsumer's dead-letter topic holds, at the last lag round",
            consumer_dead_letters.clone(),
        );
        let admissions = Family::<AdmissionLabels, Counter>::default();
        registry.register(
            "admissions",
            "Pod admission reviews the injection webhook answered, by the pod's namespace and outcome",
            admissions.clone(),
        );
        let admission_warnings = Family::<NamespaceLabels, Counter>::default();
        registry.register(
            "admission_warnings",
            "Warnings the injection webhook returned with an admitted pod (a relay Kafka will refuse, a worker that cannot run yet)",
            admission_warnings.clone(),
        );
        // 0.1 ms .. ~0.8 s: an answer is computed from caches in well under a millisecond; the
        // API server gives up at the registration's timeout (a few seconds).
        let admission_durations = Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(0.0001, 2.0, 14),
        );
        registry.register(
            "admission_duration_seconds",
            "How long the injection webhook takes to answer a review, from the parsed request to the answer",
            admission_durations.clone(),
        );
        Self {
            registry: Arc::new(registry),
            reconciles,
            errors,
            durations,
            leader,
            consumer_lag,
            consumer_dead_letters,
            admissions,
            admission_warnings,
            admission_durations,
            health: Health::default(),
        }
    }

    /// Starts timing a reconcile of `kind`, and its span while tracing is on; the time is
    /// recorded and the span ends when the guard drops.
    pub fn start(&self, kind: &'static str) -> ReconcileTimer {
        ReconcileTimer {
            histogram: self.durations.get_or_create(&KindLabels { kind }).clone(),
            start: Instant::now(),
            _span: otel::start(
                format!("reconcile {kind}"),
                otel::Kind::Internal,
                None,
                || vec![otel::KeyValue::new("k8s.resource.kind", kind)],
            ),
        }
    }

    /// Counts a finished reconcile.
    pub fn reconciled(&self, kind: &'static str, outcome: &'static str) {
        self.reconciles
            .get_or_create(&ReconcileLabels { kind, outcome })
            .inc();
    }

    /// Counts a failed reconcile.
    pub fn failed(&self, kind: &'static str, error: &'static str) {
        self.reconciles
            .get_or_create(&ReconcileLabels {
                kind,
                outcome: "error",
            })
            .inc();
        self.errors
            .get_or_create(&ErrorLabels { kind, error })
            .inc();
    }

    /// Records an EventConsumer's lag.
    pub fn set_consumer_lag(&self, namespace: &str, consumer: &str, lag: i64) {
        self.consumer_lag
            .get_or_create(&ConsumerLabels {
                namespace: namespace.to_owned(),
                consumer: consumer.to_owned(),
            })
            .set(lag);
    }

    /// Records the records an EventConsumer's dead-letter topic holds.
    pub fn set_consumer_dead_letters(&self, namespace: &str, consumer: &str, records: i64) {
        self.consumer_dead_letters
            .get_or_create(&ConsumerLabels {
                namespace: namespace.to_owned(),
                consumer: consumer.to_owned(),
            })
            .set(records);
    }

    /// Drops a deleted EventConsumer's series, so a dashboard does not show its last lag
    /// forever.
    pub fn forget_consumer(&self, namespace: &str, consumer: &str) {
        let labels = ConsumerLabels {
            namespace: namespace.to_owned(),
            consumer: consumer.to_owned(),
        };
        self.consumer_lag.remove(&labels);
        self.consumer_dead_letters.remove(&labels);
    }

    /// Counts one answered admission review of a pod in `namespace`, with the warnings it
    /// carried and how long it took.
    pub fn admitted(&self, namespace: &str, outcome: Admission, warnings: usize, took: Duration) {
        self.admissions
            .get_or_create(&AdmissionLabels {
                namespace: namespace.to_owned(),
                outcome: outcome.label(),
            })
            .inc();
        if warnings > 0 {
            self.admission_warnings
                .get_or_create(&NamespaceLabels {
                    namespace: namespace.to_owned(),
                })
                .inc_by(warnings as u64);
        }
        self.admission_durations.observe(took.as_secs_f64());
    }

    /// Records whether this replica leads.
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// Marks the process ready for `/readyz` (connected and watching, leader or standby).
    pub fn set_ready(&self, ready: bool) {
        self.health.set_ready(ready);
    }

    /// The metrics in Prometheus text format.
    pub fn render(&self) -> String {
        // Writing into a String cannot fail.
        server::render(&self.registry).unwrap_or_default()
    }

    /// Serves `/metrics`, `/healthz` and `/readyz` on `listener` until `shutdown`, with the
    /// server every Ferry binary shares.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), server::Error> {
        TelemetryServer::from_listener(listener, self.registry, self.health)
            .serve(shutdown)
            .await
    }

    /// Binds the metrics address.
    pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
        tokio::net::TcpListener::bind(addr).await
    }
}

/// Records a reconcile's duration, and ends its span, when dropped.
pub struct ReconcileTimer {
    histogram: Histogram,
    start: Instant,
    /// One span per reconcile (a root: nothing upstream carries a trace).
    _span: Option<otel::Span>,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_durations_are_rendered() {
        let m = Metrics::new();
        {
            let _timer = m.start("EventTopic");
            m.reconciled("EventTopic", "ready");
        }
        m.failed("EventTopic", "kafka");
        let text = m.render();
        assert!(
            text.contains(
                r#"ferry_operator_reconciles_total{kind="EventTopic",outcome="ready"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"ferry_operator_reconcile_errors_total{kind="EventTopic",error="kafka"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"ferry_operator_reconcile_duration_seconds_count{kind="EventTopic"} 1"#
            ),
            "{text}"
        );
    }

    #[test]
    fn a_deleted_consumers_series_go_away() {
        let m = Metrics::new();
        m.set_consumer_lag("shop", "notify", 7);
        m.set_consumer_dead_letters("shop", "notify", 3);
        m.set_consumer_lag("shop", "billing", 1);
        let text = m.render();
        assert!(
            text.contains(
                r#"ferry_operator_consumer_dead_letter_records{namespace="shop",consumer="notify"} 3"#
            ),
            "{text}"
        );
        m.forget_consumer("shop", "notify");
        let text = m.render();
        assert!(!text.contains(r#"consumer="notify""#), "{text}");
        assert!(
            text.contains(
                r#"ferry_operator_consumer_lag_records{namespace="shop",consumer="billing"} 1"#
            ),
            "{text}"
        );
    }

    #[tokio::test]
    async fn the_shared_server_serves_the_operators_registry_and_readiness() {
        let m = Metrics::new();
        m.set_leader(true);
        let listener = Metrics::bind(([127, 0, 0, 1], 0).into())
            .await
            .expect("bind");
        let port = listener.local_addr().expect("bound").port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(m.clone().serve(listener, async move {
            let _ = stopped.await;
        }));
        let get = |path| ferry_testkit::http_get(port, path);
        assert_eq!(get("/readyz").await.map(|(s, _)| s), Some(503));
        m.set_ready(true);
        assert_eq!(get("/readyz").await.map(|(s, _)| s), Some(200));
        let (status, body) = get("/metrics").await.expect("answers");
        assert_eq!(status, 200);
        assert!(body.contains("ferry_operator_leader 1"), "{body}");
        let _ = stop.send(());
        task.await.expect("join").expect("clean shutdown");
    }
}
