//! The injection webhook (DESIGN §6): a mutating admission webhook that adds the outbox relay
//! to opted-in service pods, so the service's Deployment in Git stays as written.
//!
//! ```text
//!  kube-apiserver ──AdmissionReview (pod CREATE, label ferry.dev/inject=enabled)──▶ server
//!        ▲                                                                            │
//!        │ caBundle (leader: registration)          review: annotations → injection → patch
//!        └──────── cert: CA + leaf in a Secret, renewed, hot-reloaded ◀──────────────┘
//! ```
//! The same server reviews EventTopic schemas ([`contracts`]: `/validate-eventtopic`).
//! Every replica serves (the Service may route to any of them) from the same certificate; only
//! the leader writes the webhook configurations. With `--webhook-cert-dir` the
//! certificate is cert-manager's instead ([`cert_dir`]): no CA of the operator's, and the
//! `caBundle` left to cert-manager's cainjector.

pub mod annotations;
pub mod cert;
pub mod cert_dir;
pub mod contracts;
pub mod injection;
pub mod registration;
pub mod review;
pub mod sidecar;
pub mod token_mount;

use std::{future::Future, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use axum::{Json, Router, extract::State, routing::post};
use axum_server::{
    Handle,
    accept::NoDelayAcceptor,
    tls_rustls::{RustlsAcceptor, RustlsConfig},
};
use futures::{FutureExt as _, StreamExt as _};
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client,
    core::{DynamicObject, admission::AdmissionReview},
    runtime::{WatchStreamExt as _, watcher},
};
use tokio::{sync::watch, task::JoinHandle};

pub use cert::Bundle;
pub use registration::{Endpoint, INJECT_ENABLED, INJECT_LABEL, Registration};
pub use sidecar::SidecarImage;

use crate::{
    api::EventTopic, cache::Caches, consumer::deployment::WorkerSettings, metrics::Metrics,
};

/// How often the certificate is checked for renewal when nothing else wakes the keeper. An
/// hour: renewal is due months before expiry, and a deleted Secret wakes it at once anyway.
const CERT_CHECK_INTERVAL: Duration = Duration::from_secs(3600);
/// How long start-up waits for the first list of EventTopics before serving.
const CACHE_SYNC_TIMEOUT: Duration = Duration::from_secs(60);
/// After a failed apply of the configuration, the next attempt (the leader keeps trying: until
/// it succeeds, opted-in pods fail admission on a stale `caBundle`).
const REGISTER_RETRY: Duration = Duration::from_secs(5);
/// How long in-flight reviews may take to finish on shutdown.
const DRAIN: Duration = Duration::from_secs(5);

/// Why the webhook cannot start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Certificate(#[from] cert::Error),
    #[error(transparent)]
    CertificateDir(#[from] cert_dir::Error),
    #[error("loading the webhook certificate into rustls: {0}")]
    Tls(#[source] std::io::Error),
    #[error("binding the webhook on {0}: the server stopped before listening")]
    Bind(SocketAddr),
    #[error("the EventTopic and EventConsumer caches did not sync within {0:?}")]
    CacheSync(Duration),
}

/// How the webhook is run: the operator's flags.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where to serve `/mutate`.
    pub addr: SocketAddr,
    pub registration: Registration,
    /// The Secret holding the certificate, in the operator's namespace.
    pub secret_namespace: String,
    pub secret_name: String,
    /// Serve `tls.crt`/`tls.key` of this directory instead (cert-manager's): then the Secret
    /// above is not used and the registration carries no `caBundle`.
    pub cert_dir: Option<PathBuf>,
    pub image: SidecarImage,
    /// What goes into every injected consumer worker besides its EventConsumer's spec.
    pub worker: WorkerSettings,
}

/// A serving webhook. Dropping it stops the background tasks; [`Running::shutdown`] drains.
pub struct Running {
    /// Where it listens (the port, when the flag said 0).
    pub local_addr: SocketAddr,
    /// The CA the registration gives the API server as `caBundle`, kept current; `None` when
    /// someone else writes it (cert-manager's cainjector, with `--webhook-cert-dir`).
    pub ca: watch::Receiver<Option<String>>,
    handle: Handle<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops accepting reviews and lets in-flight ones finish.
    pub async fn shutdown(self) {
        self.handle.graceful_shutdown(Some(DRAIN));
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Makes sure the certificate exists, waits for the EventTopic and EventConsumer `caches`, and
/// starts serving, counting every review in `metrics`. The handle ends only if the server
/// fails.
pub async fn start(
    client: Client,
    settings: Settings,
    caches: &Caches,
    metrics: Metrics,
) -> Result<(Running, JoinHandle<std::io::Result<()>>), Error> {
    // rustls needs a process-wide crypto provider; ring is the one the workspace builds. A
    // second call (another part installed it first) is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (tls, ca, keeper) = match &settings.cert_dir {
        Some(dir) => {
            let pair = cert_dir::read(dir).await?;
            let tls = cert_dir::load(&pair).await.map_err(Error::Tls)?;
            let keeper = tokio::spawn(cert_dir::keep(dir.clone(), tls.clone(), pair));
            (tls, watch::channel(None).1, keeper)
        }
        None => {
            let names = settings.registration.endpoint.certificate_names();
            let stored = cert::Stored {
                api: Api::namespaced(client.clone(), &settings.secret_namespace),
                name: settings.secret_name.clone(),
            };
            let bundle = stored.ensure(&names).await?;
            let tls = RustlsConfig::from_pem(
                bundle.cert.clone().into_bytes(),
                bundle.key.clone().into_bytes(),
            )
            .await
            .map_err(Error::Tls)?;
            let (ca_tx, ca_rx) = watch::channel(Some(bundle.ca_cert.clone()));
            let keeper = tokio::spawn(keep_certificate(stored, names, tls.clone(), bundle, ca_tx));
            (tls, ca_rx, keeper)
        }
    };

    let topics = caches.topics.store();
    let consumers = caches.consumers.store();
    for ready in [
        topics.wait_until_ready().boxed(),
        consumers.wait_until_ready().boxed(),
    ] {
        tokio::time::timeout(CACHE_SYNC_TIMEOUT, ready)
            .await
            .map_err(|_| Error::CacheSync(CACHE_SYNC_TIMEOUT))?
            .map_err(|_| Error::CacheSync(CACHE_SYNC_TIMEOUT))?;
    }

    let reviewer = Arc::new(review::Reviewer {
        metrics,
        image: settings.image.clone(),
        worker: settings.worker.clone(),
        topics,
        consumers,
    });
    let app = Router::new()
        .route(registration::PATH, post(mutate))
        .route(registration::CONTRACTS_PATH, post(validate_topic))
        .with_state(reviewer);
    let handle = Handle::new();
    // TCP_NODELAY (axum-server leaves Nagle on): an answer goes out as several small TLS
    // records, and Nagle would hold the last ones until the API server's delayed ACK.
    let served = tokio::spawn(
        axum_server::bind(settings.addr)
            .acceptor(RustlsAcceptor::new(tls).acceptor(NoDelayAcceptor::new()))
            .handle(handle.clone())
            .serve(app.into_make_service()),
    );
    let local_addr = handle.listening().await.ok_or(Error::Bind(settings.addr))?;
    tracing::info!(addr = %local_addr, "serving the injection webhook");
    let running = Running {
        local_addr,
        ca,
        handle,
        tasks: vec![keeper],
    };
    Ok((running, served))
}

async fn mutate(
    State(reviewer): State<Arc<review::Reviewer>>,
    Json(review): Json<AdmissionReview<Pod>>,
) -> Json<AdmissionReview<DynamicObject>> {
    Json(reviewer.review(review))
}

async fn validate_topic(
    State(reviewer): State<Arc<review::Reviewer>>,
    Json(review): Json<AdmissionReview<EventTopic>>,
) -> Json<AdmissionReview<DynamicObject>> {
    Json(reviewer.review_topic(review))
}

/// Renews the certificate when due and re-creates it when its Secret is deleted or changed,
/// reloading rustls and telling the registration the CA.
async fn keep_certificate(
    stored: cert::Stored,
    names: Vec<String>,
    tls: RustlsConfig,
    mut serving: Bundle,
    ca: watch::Sender<Option<String>>,
) {
    let changes = watcher(
        stored.api.clone(),
        watcher::Config::default().fields(&format!("metadata.name={}", stored.name)),
    )
    .default_backoff();
    tokio::pin!(changes);
    let mut tick = tokio::time::interval(CERT_CHECK_INTERVAL);
    loop {
        tokio::select! {
            event = changes.next() => if event.is_none() { return },
            _ = tick.tick() => {}
        }
        match stored.ensure(&names).await {
            Ok(fresh) if fresh != serving => {
                match tls
                    .reload_from_pem(
                        fresh.cert.clone().into_bytes(),
                        fresh.key.clone().into_bytes(),
                    )
                    .await
                {
                    Ok(()) => {
                        tracing::info!("serving a new webhook certificate");
                        ca.send_if_modified(|ca| {
                            let changed = ca.as_deref() != Some(fresh.ca_cert.as_str());
                            *ca = Some(fresh.ca_cert.clone());
                            changed
                        });
                        serving = fresh;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot load the new webhook certificate; serving the old one")
                    }
                }
            }
            Ok(_) => {}
            // The next event or tick tries again; until then the current certificate serves.
            Err(e) => tracing::warn!(error = %e, "cannot check the webhook certificate"),
        }
    }
}

/// While leading: keeps the `MutatingWebhookConfiguration` applied with the current CA (none
/// when cert-manager's cainjector writes it), again whenever the CA changes and every `resync`
/// (drift: someone edited it).
pub async fn keep_registered(
    client: Client,
    registration: Registration,
    mut ca: watch::Receiver<Option<String>>,
    resync: Duration,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    loop {
        let current = ca.borrow_and_update().clone();
        let wait = match registration.apply(&client, current.as_deref()).await {
            Ok(()) => {
                tracing::debug!(name = registration.name, "webhook configuration applied");
                resync
            }
            Err(e) => {
                tracing::warn!(error = %e, name = registration.name, "cannot apply the webhook configuration; retrying");
                REGISTER_RETRY
            }
        };
        tokio::select! {
            () = &mut stop => return,
            // A closed channel (no certificate keeper: cert-manager's CA) leaves the resync.
            Ok(()) = ca.changed() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}
