//! The identity controller: Kafka identities and least-privilege ACLs, derived from what is
//! declared (DESIGN §3).
//!
//! ```text
//!  EventTopic ───┐ watch, settled            ┌─ grants (who may do what) ─▶ desired ACLs
//!  EventConsumer ┼──────────▶ reconcile(Scope) ┼─ converge: credentials + Secrets, ACLs
//!  Secret ───────┘ + requeue every resync     │   (create missing, delete undeclared), then
//!                                             │   remove identities nobody declares
//!                                             └─ findings ─▶ AccessBook ─▶ status writers
//! ```
//!
//! ACLs depend on every resource at once (a service account may produce to one topic and
//! consume from three), so this controller is level-triggered over the whole scope: it
//! reconciles one object, the [`Scope`], in the shape of every controller here — `reconcile`
//! timed and counted, `error_policy` counting by `metric_label` and requeueing with backoff, a
//! reason on every requeue — driven by kube-runtime's own scheduler. A pass reads all
//! resources, derives the complete desired state and makes Kafka match ([`converge`]); the
//! clean-up of identities nobody declares is part of it. It manages exactly the principals
//! that are declared or still hold a Ferry credential Secret, and never reads or changes any
//! other principal's ACLs.
//!
//! Each pass also records, per resource, the principals and ACLs it declares and whether Kafka
//! holds them ([`crate::access_status`]): the EventTopic controller folds that into the
//! EventTopic's status; an EventConsumer's access part is written here, beside the status the
//! consumer controller writes.
//!
//! Grants follow ownership ([`grants`], [`consumer_grants`]): a conflicting EventTopic, a
//! consumer group outside its namespace or a dead-letter topic that is not the namespace's own
//! grants nothing, and the resource's `AccessGranted` condition says why. Failures stay with
//! whom they concern ([`failures`]): a failure of one identity is shown on the resources that
//! declare that identity only, as an Event and a condition, and the other identities still
//! converge; only what concerns everyone (Kafka unreachable, its ACLs unreadable) is reported
//! on every resource.

pub mod consumer_grants;
mod context;
pub mod converge;
pub mod credentials;
pub mod desired_acls;
mod error;
mod events;
mod failures;
mod findings;
pub mod grants;
pub mod principal;
mod scope;
mod triggers;

use std::{collections::BTreeMap, convert::Infallible, sync::Arc, time::Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    ResourceExt,
    api::ListParams,
    runtime::controller::{self, Action},
};
use tracing::{info, warn};

use crate::access_status::{self, Kind};
pub use context::{Asserted, Context};
pub use converge::Report;
pub use error::{Error, Result};
use failures::Failures;
use grants::Identity;
pub use scope::Scope;

/// The `kind` label of this controller's reconcile metrics.
const KIND: &str = "Identity";

/// Runs the controller until `shutdown` completes: a pass after changes (settled, so a
/// `kubectl apply -f dir/` costs one pass), every `--resync-interval`, and after failures with
/// backoff.
pub async fn run(ctx: Arc<Context>, shutdown: impl Future<Output = ()> + Send + 'static) {
    let (store, scope) = Scope::new(ctx.namespace.as_deref()).store();
    let queue = triggers::triggers(&ctx)
        .map(move |()| Ok::<_, Infallible>(scope.clone()))
        .take_until(shutdown);
    controller::applier(
        |scope, ctx| Box::pin(reconcile(scope, ctx)),
        error_policy,
        ctx,
        store,
        queue,
        controller::Config::default(),
    )
    .for_each(|result| async move {
        if let Err(e) = result {
            warn!(error = %e, "identity controller event");
        }
    })
    .await;
}

/// Entry point of one pass over the scope.
pub async fn reconcile(scope: Arc<Scope>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.start(KIND);
    let report = scope.reconcile(&ctx).await?;
    ctx.reset_backoff();
    ctx.metrics.reconciled(KIND, "ready");
    if report != Report::default() {
        info!(?report, "identities and ACLs reconciled");
    }
    // Requeue at the resync interval: drift made directly in Kafka (an ACL deleted, a
    // credential lost) is repaired this way.
    Ok(Action::requeue(ctx.resync))
}

/// After an error: count it and retry the whole pass with exponential backoff.
pub fn error_policy(_scope: Arc<Scope>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.failed(KIND, error.metric_label());
    let delay = ctx.next_backoff();
    warn!(
        error = %error,
        cause = ?error,
        retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
        "identity reconcile failed"
    );
    // Requeue with backoff: Kafka or the API server unreachable heals by itself, and a refusal
    // a person fixes is picked up by the next retry (or at once by the change that fixes it).
    Action::requeue(delay)
}

impl Scope {
    /// One pass over the whole scope: credentials, then ACLs, then removal of identities no
    /// longer declared; then what each resource was granted, for its status. Any failure fails
    /// the pass (so it is retried with backoff); the rest has converged.
    pub async fn reconcile(&self, ctx: &Context) -> Result<Report> {
        ctx.asserted.forget_if_due(ctx.resync, Instant::now());
        if !ctx.caches.filled() {
            return Err(Error::CacheNotFilled);
        }
        let topics = ctx.caches.topics.store().state();
        let consumers = ctx.caches.consumers.store().state();
        let secrets = credential_secrets(ctx).await?;

        let grants = grants::from_resources(&topics, &consumers);
        let mut failures = Failures::default();
        let result = converge::converge(ctx, &grants, &secrets, &mut failures).await;
        events::access_failed(ctx, &grants, result.as_ref().err(), &failures).await;
        let findings = findings::findings(
            &topics,
            &consumers,
            &grants,
            result.as_ref().err(),
            &failures,
        );
        ctx.book.record(findings.clone());
        for consumer in &consumers {
            let key = (
                Kind::EventConsumer,
                consumer.namespace().unwrap_or_default(),
                consumer.name_any(),
            );
            let Some(entry) = findings.get(&key) else {
                continue;
            };
            match access_status::write_consumer_access(&ctx.client, consumer, entry).await {
                Ok(()) => {}
                // Deleted since the cache showed it: nothing left to report on.
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => {
                    warn!(error = %e, consumer = %consumer.name_any(), "cannot write EventConsumer access status");
                }
            }
        }
        let report = result?;
        match failures.into_first() {
            Some(error) => Err(error),
            None => Ok(report),
        }
    }
}

/// Every Ferry credential Secret in scope, by the identity it belongs to.
async fn credential_secrets(ctx: &Context) -> Result<BTreeMap<Identity, Secret>> {
    let labelled =
        ListParams::default().labels(&format!("{}=scram", credentials::CREDENTIAL_LABEL));
    Ok(ctx
        .api::<Secret>()
        .list(&labelled)
        .await?
        .items
        .into_iter()
        .filter_map(|s| {
            let ns = s.namespace()?;
            let sa = s.name_any().strip_prefix("ferry-kafka-")?.to_owned();
            Some(((ns, sa), s))
        })
        .collect())
}
