//! `ferry-operator run`: connects to Kubernetes and Kafka, serves metrics, and runs the
//! controllers (EventTopics, EventConsumers, and identities with their ACLs) while this replica holds the
//! leader Lease.
//!
//! ```text
//!  standby ──Lease acquired──▶ leading (controllers run) ──Lease lost──▶ standby
//!     └───────────── SIGTERM: controllers drain, Lease released, exit ─────────┘
//! ```
//! Losing the Lease drops the controllers at once (in-flight reconciles are cancelled). So does
//! losing contact with it (a renewal that fails): a replica that cannot renew stops acting
//! before another one's acquisition (after the Lease duration) lets it act. It then stays up as
//! a standby and rejoins the election with a fresh read of the Lease, rather than exiting as
//! controller-runtime does: on a loaded API server one refused request should not cost a
//! process restart (and, in a pod, a CrashLoopBackOff).

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::Context as _;
use clap::Args;
use ferry_common::{
    duration,
    kafka::KafkaArgs,
    otel::TraceArgs,
    shutdown::{self, stopped},
    telemetry::LogArgs,
};
use kube::{
    Client, Config,
    config::{KubeConfigOptions, Kubeconfig},
    runtime::events::Reporter,
};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::{
    access_status::AccessBook,
    cache::Caches,
    consumer::{self, deployment::WorkerSettings},
    events::Publisher,
    identity::{self, credentials::ClientSettings},
    kafka::{Batched, KafkaAdmin},
    leader,
    metrics::Metrics,
    topic, webhook,
};

/// Flags of `ferry-operator run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    kafka: KafkaArgs,
    #[command(flatten)]
    log: LogArgs,
    #[command(flatten)]
    trace: TraceArgs,

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
    #[arg(long, env = "FERRY_RESYNC_INTERVAL", default_value = "5m", value_parser = duration::parse)]
    resync_interval: Duration,

    /// Deadline of one Kafka admin request.
    // 30 s: librdkafka's default request.timeout.ms.
    #[arg(long, env = "FERRY_KAFKA_ADMIN_TIMEOUT", default_value = "30s", value_parser = duration::parse)]
    kafka_admin_timeout: Duration,

    /// Namespace of the leader-election Lease (the operator's own namespace); it must exist.
    #[arg(long, env = "FERRY_LEASE_NAMESPACE", default_value = "ferry-system")]
    lease_namespace: String,

    /// Name of the leader-election Lease.
    #[arg(long, env = "FERRY_LEASE_NAME", default_value = "ferry-operator")]
    lease_name: String,

    /// How long a Lease is valid without renewal (`15s`; a bare number is seconds); a new
    /// leader waits this long after a crash.
    // 15 s: the duration kube-controller-manager uses for its own leader election.
    #[arg(long, env = "FERRY_LEASE_DURATION", default_value = "15s",
          value_parser = leader::parse_lease_duration)]
    lease_duration: Duration,

    /// This replica's identity in the Lease; the pod name in a cluster.
    #[arg(long, env = "FERRY_POD_NAME")]
    identity: Option<String>,

    /// Bootstrap servers written into services' credential Secrets, when clients reach Kafka
    /// by another address than the operator does; the operator's own when unset.
    #[arg(long, env = "FERRY_CLIENT_BOOTSTRAP")]
    client_bootstrap: Option<String>,

    #[command(flatten)]
    webhook: WebhookArgs,
    /// The `ferry-sidecar` image of the consumer workers and the injected relay.
    #[arg(long, env = "FERRY_SIDECAR_IMAGE", default_value = DEFAULT_SIDECAR_IMAGE)]
    sidecar_image: String,

    /// Pull policy of the worker and relay images (Always, IfNotPresent or Never).
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

    /// How many objects each controller reconciles at once (EventTopics, EventConsumers,
    /// EventReplays each).
    // 32: enough to fill Kafka's batched admin requests and keep the API server busy. Unbounded
    // (kube-runtime's default), a thousand resources applied at once queue behind each other in
    // the API server and Kafka until their reconciles pass their deadline and start over.
    #[arg(long, env = "FERRY_MAX_CONCURRENT_RECONCILES", default_value_t = 32,
          value_parser = clap::value_parser!(u16).range(1..))]
    max_concurrent_reconciles: u16,
}

/// Flags of the injection webhook (DESIGN §6). It runs when `--webhook-addr` is given.
#[derive(Debug, Args)]
struct WebhookArgs {
    /// Where to serve the injection webhook (`/mutate`, TLS); off when unset.
    #[arg(long, env = "FERRY_WEBHOOK_ADDR")]
    webhook_addr: Option<SocketAddr>,

    /// The URL the API server calls instead of the Service, for an operator outside the
    /// cluster (tests, the demo), e.g. `https://127.0.0.1:9443`.
    #[arg(long, env = "FERRY_WEBHOOK_URL", value_parser = parse_https_url)]
    webhook_url: Option<String>,

    /// The Service in front of the operator's pods (in the operator's namespace, port 443),
    /// when no --webhook-url is given.
    #[arg(
        long,
        env = "FERRY_WEBHOOK_SERVICE",
        default_value = "ferry-operator-webhook"
    )]
    webhook_service: String,

    /// Name of the MutatingWebhookConfiguration the leader keeps current.
    #[arg(
        long,
        env = "FERRY_WEBHOOK_CONFIGURATION",
        default_value = "ferry-operator"
    )]
    webhook_configuration: String,

    /// Secret (in the operator's namespace) holding the webhook's CA and certificate.
    #[arg(
        long,
        env = "FERRY_WEBHOOK_SECRET",
        default_value = "ferry-webhook-tls"
    )]
    webhook_secret: String,

    /// Serve `tls.crt`/`tls.key` of this directory (a mounted Secret that cert-manager writes)
    /// instead of a certificate of the operator's own CA, reloaded when they change; the
    /// operator then writes no `caBundle` (cert-manager's cainjector does).
    #[arg(long, env = "FERRY_WEBHOOK_CERT_DIR")]
    webhook_cert_dir: Option<PathBuf>,

    /// What the API server does with an opted-in pod when the webhook cannot answer: `Fail`
    /// refuses it (its relay would be missing and its outbox would pile up unseen), `Ignore`
    /// creates it without Ferry's containers.
    #[arg(long, env = "FERRY_WEBHOOK_FAILURE_POLICY", default_value = "Fail",
          value_parser = ["Fail", "Ignore"])]
    webhook_failure_policy: String,
}

fn parse_https_url(s: &str) -> Result<String, String> {
    if s.starts_with("https://") && s.len() > "https://".len() {
        Ok(s.to_owned())
    } else {
        Err("the API server calls webhooks over TLS only: expected https://HOST[:PORT]".into())
    }
}

impl WebhookArgs {
    /// The webhook's settings, when it is enabled.
    fn settings(
        &self,
        operator_namespace: &str,
        watch_namespace: Option<&String>,
        image: webhook::SidecarImage,
        worker: WorkerSettings,
    ) -> Option<webhook::Settings> {
        let addr = self.webhook_addr?;
        let endpoint = match &self.webhook_url {
            Some(url) => webhook::Endpoint::Url(url.clone()),
            None => webhook::Endpoint::Service {
                namespace: operator_namespace.to_owned(),
                name: self.webhook_service.clone(),
            },
        };
        Some(webhook::Settings {
            addr,
            registration: webhook::Registration {
                name: self.webhook_configuration.clone(),
                endpoint,
                failure_policy: self.webhook_failure_policy.clone(),
                namespace: watch_namespace.cloned(),
            },
            secret_namespace: operator_namespace.to_owned(),
            secret_name: self.webhook_secret.clone(),
            cert_dir: self.webhook_cert_dir.clone(),
            image,
            worker,
        })
    }
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

/// The pause between attempts to rejoin the leader election, so an API server that refuses
/// every request is not asked in a busy loop.
const REJOIN_PAUSE: Duration = Duration::from_secs(1);

impl RunArgs {
    /// Runs the operator until SIGTERM.
    pub async fn run(self) -> anyhow::Result<()> {
        let Self {
            kafka,
            log,
            trace,
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
            webhook,
            sidecar_image,
            sidecar_image_pull_policy,
            lag_interval,
            scale_down_cooldown,
            max_concurrent_reconciles,
        } = self;
        log.init();
        let _tracing = trace.init("ferry-operator", ferry_common::otel::Spans::Small)?;
        let client = kube_client(kubeconfig.as_ref()).await?;
        let admin = KafkaAdmin::new(&kafka.client_config()?, kafka_admin_timeout)?;
        let batched = Batched::new(admin.clone());
        let sidecar = webhook::SidecarImage {
            image: sidecar_image.clone(),
            pull_policy: sidecar_image_pull_policy.clone(),
        };
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

        let join_election = || {
            leader::lease(
                client.clone(),
                &lease_namespace,
                &lease_name,
                &identity,
                lease_duration,
            )
        };
        let mut lease = join_election().await?;
        // One watch per kind for the process, through every leadership term: the webhook
        // (every replica) and the controllers (the leader) read the same caches.
        let (caches, _cache_tasks) = Caches::start(&client, namespace.as_deref());
        // Every replica serves admission (the Service may route to any); only the leader
        // registers it.
        let (webhook, served) = match webhook.settings(
            &lease_namespace,
            namespace.as_ref(),
            sidecar,
            worker_settings.clone(),
        ) {
            Some(settings) => {
                let registration = settings.registration.clone();
                let (running, served) =
                    webhook::start(client.clone(), settings, &caches, metrics.clone())
                        .await
                        .context("starting the injection webhook")?;
                (Some((running, registration)), Some(served))
            }
            None => (None, None),
        };
        metrics.set_ready(true);
        info!(identity, lease = lease_name, "waiting for leadership");

        let reporter = Reporter {
            controller: "ferry-operator".into(),
            instance: Some(identity.clone()),
        };
        let start_controller = |term_rx: watch::Receiver<bool>| {
            let ctx_client = client.clone();
            let ctx_batched = batched.clone();
            let ctx_metrics = metrics.clone();
            let events = Publisher::new(client.clone(), reporter.clone());
            let topic_events = events.clone();
            // Fresh each leadership term: what the identity controller finds, for the topics.
            let (book, access_changed) = AccessBook::new();
            let topic_book = book.clone();
            let topics = topic::run(
                caches.topics.clone(),
                move |store| {
                    topic::Context::new(
                        ctx_client,
                        ctx_batched,
                        topic_events,
                        ctx_metrics,
                        store,
                        resync_interval,
                        topic_book,
                    )
                },
                access_changed,
                max_concurrent_reconciles,
                stopped(term_rx.clone()),
            );
            let consumers = consumer::run(
                consumer::Settings {
                    client: client.clone(),
                    kafka: batched.clone(),
                    events: events.clone(),
                    metrics: metrics.clone(),
                    worker: worker_settings.clone(),
                    resync: resync_interval,
                    cooldown: scale_down_cooldown,
                    lag_interval,
                    concurrency: max_concurrent_reconciles,
                },
                caches.clone(),
                namespace.clone(),
                stopped(term_rx.clone()),
            );
            let replays = crate::replay::run(
                namespace.clone(),
                crate::replay::Context {
                    client: client.clone(),
                    admin: admin.clone(),
                    events: events.clone(),
                    metrics: metrics.clone(),
                    worker: worker_settings.clone(),
                    backoffs: Default::default(),
                },
                max_concurrent_reconciles,
                stopped(term_rx.clone()),
            );
            let access = identity::run(
                std::sync::Arc::new(identity::Context::new(
                    client.clone(),
                    admin.clone(),
                    client_settings.clone(),
                    namespace.clone(),
                    caches.clone(),
                    events,
                    book,
                    metrics.clone(),
                    resync_interval,
                )),
                stopped(term_rx.clone()),
            );
            let contracts = crate::contract_delivery::run(
                client.clone(),
                caches.topics.clone(),
                resync_interval,
                stopped(term_rx.clone()),
            );
            let registered = webhook.as_ref().map(|(running, registration)| {
                webhook::keep_registered(
                    client.clone(),
                    registration.clone(),
                    running.ca.clone(),
                    resync_interval,
                    stopped(term_rx.clone()),
                )
            });
            // All drain on the same signal; any stopping by itself is a bug.
            Box::pin(async move {
                let registered = async {
                    if let Some(r) = registered {
                        r.await;
                        info!("webhook registration stopped");
                    }
                };
                tokio::join!(
                    async {
                        topics.await;
                        info!("EventTopic controller stopped")
                    },
                    async {
                        consumers.await;
                        info!("EventConsumer controller stopped")
                    },
                    async {
                        access.await;
                        info!("identity controller stopped")
                    },
                    async {
                        replays.await;
                        info!("EventReplay controller stopped")
                    },
                    async {
                        contracts.await;
                        info!("event contract delivery stopped")
                    },
                    registered,
                );
            })
        };

        let signal = shutdown::signal();
        tokio::pin!(signal);
        let webhook_served = async {
            match served {
                Some(served) => served.await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(webhook_served);
        // While leading: the controller future and the sender that drains it on SIGTERM.
        let mut leading = None;
        // Set when a Lease request failed: the manager's view of who leads is then unknown,
        // so a fresh one reads the Lease again before anything acts.
        let mut rejoin = false;
        let outcome: anyhow::Result<()> = loop {
            if rejoin {
                tokio::select! {
                    _ = &mut signal => break Ok(()),
                    joined = join_election() => match joined {
                        Ok(fresh) => {
                            info!(identity, "rejoined the leader election");
                            lease = fresh;
                            rejoin = false;
                        }
                        Err(e) => {
                            warn!(error = %ferry_common::errors::chain(&e), "rejoining the leader election failed; retrying");
                            tokio::time::sleep(REJOIN_PAUSE).await;
                        }
                    },
                }
                continue;
            }
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
                    Err(e) => {
                        // A renewal that failed cannot confirm leadership: stop acting at once
                        // (before the Lease can expire and another replica act), then stand by
                        // and rejoin the election. One slow or refused request on a loaded API
                        // server costs a restart of the controllers, not of the process.
                        if leading.take().is_some() {
                            warn!(identity, error = %ferry_common::errors::chain(&e), "lost contact with the leader Lease: controllers stopped; rejoining as a standby");
                        } else {
                            warn!(error = %ferry_common::errors::chain(&e), "leader election failed; rejoining");
                        }
                        metrics.set_leader(false);
                        rejoin = true;
                        tokio::time::sleep(REJOIN_PAUSE).await;
                    }
                },
                () = controller => break Err(anyhow::anyhow!("the controllers stopped by themselves")),
                served = &mut webhook_served => break Err(anyhow::anyhow!("the injection webhook stopped serving: {served:?}")),
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
        if let Some((running, _)) = webhook {
            running.shutdown().await;
        }
        let _ = stop_tx.send(true);
        let _ = server.await;
        outcome
    }
}
