//! `ferry-operator run`: connects to Kubernetes and Kafka, serves metrics, and runs the
//! controllers (EventTopics, EventConsumers, and identities with their ACLs) while this replica holds the
//! leader Lease.
//!
//! ```text
//!  standby ──Lease acquired──▶ leading (controllers run) ──Lease lost──▶ standby
//!     └───────────── SIGTERM: controllers drain, Lease released, exit ─────────┘
//! ```
//! Losing the Lease drops the controllers at once (in-flight reconciles are cancelled); losing
//! contact with the Lease while leading exits the process (as controller-runtime does), so a
//! replica that cannot renew stops acting before another one's acquisition (after the Lease
//! duration) lets it act.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::Context as _;
use clap::Args;
use ferry_common::{kafka::KafkaArgs, telemetry::LogArgs};
use kube::{
    Api, Client, Config,
    config::{KubeConfigOptions, Kubeconfig},
    runtime::events::{Recorder, Reporter},
};
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::{
    access::AccessBook,
    api::EventTopic,
    consumer::{self, deployment::WorkerSettings},
    identity::{self, credentials::ClientSettings},
    kafka::{Batched, KafkaAdmin},
    metrics::Metrics,
    topic,
};

/// Parses a duration such as `30s`, `5m` or `1h` (jiff's friendly format).
fn parse_duration(s: &str) -> Result<Duration, String> {
    let signed: jiff::SignedDuration = s.parse().map_err(|e| format!("{e}"))?;
    Duration::try_from(signed).map_err(|e| format!("{e}"))
}

/// Flags of `ferry-operator run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    kafka: KafkaArgs,
    #[command(flatten)]
    log: LogArgs,

    /// Kubeconfig to use; in-cluster config (or $KUBECONFIG) when unset.
    #[arg(long, env = "FERRY_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,

    /// Watch only this namespace; all namespaces when unset.
    #[arg(long, env = "FERRY_NAMESPACE")]
    namespace: Option<String>,

    /// Address of the /metrics, /healthz and /readyz server.
    #[arg(long, env = "FERRY_METRICS_ADDR", default_value = "0.0.0.0:9090")]
    metrics_addr: SocketAddr,

    /// How often an in-sync topic is checked again, to revert drift made directly in Kafka.
    // 5 minutes: drift is reverted within minutes while 1,000 topics cost a few describe
    // requests per minute.
    #[arg(long, env = "FERRY_RESYNC_INTERVAL", default_value = "5m", value_parser = parse_duration)]
    resync_interval: Duration,

    /// Deadline of one Kafka admin request.
    // 30 s: librdkafka's default request.timeout.ms.
    #[arg(long, env = "FERRY_KAFKA_ADMIN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    kafka_admin_timeout: Duration,

    /// Namespace of the leader-election Lease (the operator's own namespace).
    #[arg(long, env = "FERRY_LEASE_NAMESPACE", default_value = "ferry-system")]
    lease_namespace: String,

    /// Name of the leader-election Lease.
    #[arg(long, env = "FERRY_LEASE_NAME", default_value = "ferry-operator")]
    lease_name: String,

    /// Seconds a Lease is valid without renewal; a new leader waits this long after a crash.
    // 15 s: the duration kube-controller-manager uses for its own leader election.
    #[arg(long, env = "FERRY_LEASE_DURATION", default_value_t = 15,
          value_parser = clap::value_parser!(u64).range(2..))]
    lease_duration: u64,

    /// This replica's identity in the Lease; the pod name in a cluster.
    #[arg(long, env = "FERRY_POD_NAME")]
    identity: Option<String>,

    /// Bootstrap servers written into services' credential Secrets, when clients reach Kafka
    /// by another address than the operator does; the operator's own when unset.
    #[arg(long, env = "FERRY_CLIENT_BOOTSTRAP")]
    client_bootstrap: Option<String>,

    /// The `ferry-sidecar` image of the consumer workers.
    #[arg(long, env = "FERRY_SIDECAR_IMAGE", default_value = DEFAULT_SIDECAR_IMAGE)]
    sidecar_image: String,

    /// Pull policy of the worker image (Always, IfNotPresent or Never).
    #[arg(long, env = "FERRY_SIDECAR_IMAGE_PULL_POLICY", default_value = "IfNotPresent",
          value_parser = ["Always", "IfNotPresent", "Never"])]
    sidecar_image_pull_policy: String,

    /// How often every EventConsumer's lag is measured (status.lag, scaling).
    // 10 s: KEDA's default pollingInterval is 30 s; 10 s scales a burst sooner for one small
    // round of admin requests.
    #[arg(long, env = "FERRY_LAG_INTERVAL", default_value = "10s",
          value_parser = ferry_common::duration::parse)]
    lag_interval: Duration,

    /// How long fewer workers must suffice before a worker Deployment shrinks.
    // 5 minutes: KEDA's default cooldownPeriod and the HPA's scale-down stabilization window.
    #[arg(long, env = "FERRY_SCALE_DOWN_COOLDOWN", default_value = "5m",
          value_parser = ferry_common::duration::parse)]
    scale_down_cooldown: Duration,
}

/// The image `make images` builds for this version (`scripts/env/images.sh`).
const DEFAULT_SIDECAR_IMAGE: &str =
    concat!("docker.io/ferry/ferry-sidecar:", env!("CARGO_PKG_VERSION"));

async fn kube_client(kubeconfig: Option<&PathBuf>) -> anyhow::Result<Client> {
    Ok(match kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let config =
                Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
            Client::try_from(config)?
        }
        None => Client::try_default().await?,
    })
}

/// Resolves on SIGTERM or Ctrl-C.
async fn termination() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the operator");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

impl RunArgs {
    /// Runs the operator until SIGTERM.
    pub async fn run(self) -> anyhow::Result<()> {
        let Self {
            kafka,
            log,
            kubeconfig,
            namespace,
            metrics_addr,
            resync_interval,
            kafka_admin_timeout,
            lease_namespace,
            lease_name,
            lease_duration,
            identity,
            client_bootstrap,
            sidecar_image,
            sidecar_image_pull_policy,
            lag_interval,
            scale_down_cooldown,
        } = self;
        log.init();
        let client = kube_client(kubeconfig.as_ref()).await?;
        let admin = KafkaAdmin::new(&kafka.client_config()?, kafka_admin_timeout)?;
        let batched = Batched::new(admin.clone());
        let worker_settings = WorkerSettings::new(
            sidecar_image,
            sidecar_image_pull_policy,
            &kafka,
            client_bootstrap.as_deref(),
        );
        let client_settings = ClientSettings {
            bootstrap_servers: client_bootstrap.unwrap_or_else(|| kafka.bootstrap.clone()),
            security_protocol: kafka.security_protocol.as_str().to_owned(),
        };
        let metrics = Metrics::new();
        let identity = identity.unwrap_or_else(|| {
            format!(
                "ferry-operator-{}-{}",
                std::process::id(),
                jiff::Timestamp::now().as_millisecond()
            )
        });

        let (stop_tx, stop_rx) = watch::channel(false);
        let listener = Metrics::bind(metrics_addr)
            .await
            .with_context(|| format!("binding {metrics_addr}"))?;
        info!(addr = %listener.local_addr()?, "serving metrics");
        let server = tokio::spawn(metrics.clone().serve(listener, stopped(stop_rx.clone())));

        let lease = LeaseManagerBuilder::new(client.clone(), &lease_name)
            .with_namespace(&lease_namespace)
            .with_identity(&identity)
            .with_duration(lease_duration)
            .with_grace((lease_duration / 3).max(1))
            .with_field_manager(crate::topic::FIELD_MANAGER)
            .build()
            .await
            .context("setting up the leader Lease")?;
        metrics.set_ready(true);
        info!(identity, lease = lease_name, "waiting for leadership");

        let api = match &namespace {
            Some(ns) => Api::<EventTopic>::namespaced(client.clone(), ns),
            None => Api::<EventTopic>::all(client.clone()),
        };
        let reporter = Reporter {
            controller: "ferry-operator".into(),
            instance: Some(identity.clone()),
        };
        let start_controller = |term_rx: watch::Receiver<bool>| {
            let ctx_client = client.clone();
            let ctx_batched = batched.clone();
            let ctx_metrics = metrics.clone();
            let recorder = Recorder::new(client.clone(), reporter.clone());
            // Fresh each leadership term: what the identity controller finds, for the topics.
            let (book, access_changed) = AccessBook::new();
            let topic_book = book.clone();
            let topics = topic::run(
                api.clone(),
                move |store| {
                    topic::Context::new(
                        ctx_client,
                        ctx_batched,
                        recorder,
                        ctx_metrics,
                        store,
                        resync_interval,
                        topic_book,
                    )
                },
                access_changed,
                stopped(term_rx.clone()),
            );
            let consumers = consumer::run(
                consumer::Settings {
                    client: client.clone(),
                    kafka: batched.clone(),
                    recorder: Recorder::new(client.clone(), reporter.clone()),
                    metrics: metrics.clone(),
                    worker: worker_settings.clone(),
                    resync: resync_interval,
                    cooldown: scale_down_cooldown,
                    lag_interval,
                },
                namespace.clone(),
                stopped(term_rx.clone()),
            );
            let access = identity::run(
                identity::Context {
                    client: client.clone(),
                    admin: admin.clone(),
                    settings: client_settings.clone(),
                    namespace: namespace.clone(),
                    recorder: Recorder::new(client.clone(), reporter.clone()),
                    asserted: Default::default(),
                    book,
                },
                resync_interval,
                stopped(term_rx),
            );
            // All drain on the same signal; any stopping by itself is a bug.
            Box::pin(async move {
                tokio::join!(topics, consumers, access);
            })
        };

        let signal = termination();
        tokio::pin!(signal);
        // While leading: the controller future and the sender that drains it on SIGTERM.
        let mut leading = None;
        let outcome: anyhow::Result<()> = loop {
            let controller = async {
                match leading.as_mut() {
                    Some((controller, _)) => controller.await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = &mut signal => break Ok(()),
                changed = lease.changed() => match changed {
                    Ok(true) => {
                        info!(identity, "leading: starting controllers");
                        metrics.set_leader(true);
                        let (term_tx, term_rx) = watch::channel(false);
                        leading = Some((start_controller(term_rx), term_tx));
                    }
                    Ok(false) => {
                        // Dropping the controller cancels in-flight reconciles at once.
                        leading = None;
                        metrics.set_leader(false);
                        warn!(identity, "lost leadership: controllers stopped");
                    }
                    Err(e) if leading.is_some() => {
                        // Leadership can no longer be confirmed: stop acting at once and exit,
                        // as controller-runtime does; the pod restarts as a standby.
                        leading = None;
                        metrics.set_leader(false);
                        break Err(anyhow::Error::new(e).context("lost contact with the leader Lease"));
                    }
                    Err(e) => {
                        warn!(error = %e, "leader election failed; retrying");
                        // Standby: nothing to stop; retry after a pause (no busy loop).
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                },
                () = controller => break Err(anyhow::anyhow!("the controllers stopped by themselves")),
            }
        };
        if let Some((controller, term_tx)) = leading.take() {
            info!("SIGTERM: draining controllers");
            let _ = term_tx.send(true);
            controller.await;
        }
        metrics.set_leader(false);
        match tokio::time::timeout(Duration::from_secs(5), lease.release()).await {
            Ok(Ok(())) => info!("released the leader Lease"),
            Ok(Err(e)) => warn!(error = %e, "could not release the leader Lease"),
            Err(_) => warn!("timed out releasing the leader Lease"),
        }
        let _ = stop_tx.send(true);
        let _ = server.await;
        outcome
    }
}

/// Resolves once `rx` says true (or its sender is gone).
async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-5s").is_err());
    }
}
