//! The EventReplay controller: replays an EventConsumer's dead letters from a Job under a
//! principal of its own (issue #18).
//!
//! ```text
//!  EventReplay ─watch─▶ reconcile ─▶ finalizer
//!  Job ─owns──────────▶    │         ├─ Apply: finished?    → principal removed, done
//!                          │         │         Job reported? → phase, conditions, Event
//!                          │         │         otherwise     → consumer resolved → credential
//!                          │         │           (Kafka, then Secret) → ACLs → ledger ConfigMap
//!                          │         │           → ServiceAccount, Role, RoleBinding → Job
//!                          │         └─ Cleanup: the principal's ACLs and credential
//!  Job ─dlq-replay─▶ Kafka (its principal) ─▶ status.result of its EventReplay
//! ```
//!
//! Why a custom resource rather than an annotation on the EventConsumer: a replay is an
//! event with its own selection, outcome and history, and several may exist per consumer; a
//! resource gives each its status, Events, RBAC (`create eventreplays` is whom a platform team
//! lets replay) and a GitOps form (commit an EventReplay), where an annotation would be one
//! mutable slot on an object its owners apply with their own tools.
//!
//! The principal lives as long as the replay runs: it is removed as soon as the Job reports,
//! and at the latest when the EventReplay is deleted (the finalizer). Everything else made for
//! it (Secret, ServiceAccount, Role, RoleBinding, Job) is owned by the EventReplay.

mod error;
pub mod plan;

use std::sync::Arc;

use futures::{FutureExt as _, StreamExt};
use jiff::Timestamp;
use k8s_openapi::api::{
    batch::v1::Job,
    core::v1::{ConfigMap, Secret, ServiceAccount},
    rbac::v1::{Role, RoleBinding},
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ObjectMeta, Patch, PatchParams, PostParams},
    runtime::{
        Controller,
        controller::Action,
        events::EventType,
        finalizer::{self, finalizer},
        reflector::ObjectRef,
        watcher,
    },
};
use tracing::{info, warn};

use crate::{
    api::{Condition, ConditionStatus, EventConsumer, EventReplay, EventReplayStatus, ReplayPhase},
    consumer::deployment::WorkerSettings,
    events::Publisher,
    identity::credentials,
    kafka::KafkaAdmin,
    metrics::Metrics,
    reconcile::{Backoffs, PublishEvent},
};
pub use error::{Error, Result};

/// The kind label in metrics and logs.
const KIND: &str = "EventReplay";
/// The finalizer that removes the replay's Kafka principal (Kafka is outside garbage
/// collection).
pub const FINALIZER: &str = "ferry.dev/remove-replay-principal";
/// The field manager of this controller's writes.
pub const MANAGER: &str = "ferry-operator/replay";
/// How soon a replay waiting for its consumer's topics looks again.
const WAIT_FOR_CONSUMER: std::time::Duration = std::time::Duration::from_secs(5);

/// What every reconcile shares.
pub struct Context {
    /// The Kubernetes client.
    pub client: Client,
    /// The Kafka admin (credentials and ACLs of replay principals).
    pub admin: KafkaAdmin,
    /// Publishes Kubernetes Events.
    pub events: Publisher,
    /// Metrics.
    pub metrics: Metrics,
    /// The image, pull policy and Kafka settings of the Job (those of the workers).
    pub worker: WorkerSettings,
    /// Each replay's backoff after failed reconciles.
    pub backoffs: Backoffs<ObjectRef<EventReplay>>,
}

/// Runs the controller until `shutdown` completes; `namespace` limits what it watches (all
/// namespaces when `None`), `concurrency` bounds the reconciles in flight.
pub async fn run(
    namespace: Option<String>,
    ctx: Context,
    concurrency: u16,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let (api, jobs) = match &namespace {
        Some(ns) => (
            Api::<EventReplay>::namespaced(ctx.client.clone(), ns),
            Api::<Job>::namespaced(ctx.client.clone(), ns),
        ),
        None => (
            Api::<EventReplay>::all(ctx.client.clone()),
            Api::<Job>::all(ctx.client.clone()),
        ),
    };
    let controller = Controller::new(api, watcher::Config::default().any_semantic())
        .with_config(crate::reconcile::controller_config(concurrency))
        .owns(
            jobs,
            watcher::Config::default().labels("app.kubernetes.io/name=ferry-replay"),
        );
    let store = controller.store();
    let shutdown = shutdown.shared();
    let controller = controller
        .graceful_shutdown_on(shutdown.clone())
        .run(reconcile, error_policy, Arc::new(ctx))
        .for_each(|result| async move {
            if let Err(e) = result {
                warn!(error = %e, "EventReplay controller event");
            }
        });
    crate::reconcile::run_until_drained(controller, store, shutdown).await;
}

/// Entry point of one reconcile.
pub async fn reconcile(replay: Arc<EventReplay>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.start(KIND);
    let namespace = replay.namespace().ok_or(Error::MissingNamespace)?;
    let api = Api::<EventReplay>::namespaced(ctx.client.clone(), &namespace);
    let key = ObjectRef::from_obj(replay.as_ref());
    let result = crate::reconcile::finalized(
        finalizer(&api, FINALIZER, replay, |event| async {
            match event {
                finalizer::Event::Apply(r) => apply(&r, &ctx, &namespace).await,
                finalizer::Event::Cleanup(r) => {
                    remove_principal(&r, &ctx).await?;
                    Ok(Action::await_change())
                }
            }
        })
        .await,
    )
    .map_err(|e| Error::Finalizer(Box::new(e)));
    if result.is_ok() {
        ctx.backoffs.reset(&key);
    }
    result
}

/// After an error: count it and retry with per-object exponential backoff.
pub fn error_policy(replay: Arc<EventReplay>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.failed(KIND, error.metric_label());
    if let Error::Finalizer(e) = error
        && crate::reconcile::is_stale_finalizer_write(e)
    {
        // Not a failure: the cache was behind the server; read it again soon.
        return Action::requeue(crate::reconcile::STALE_CACHE_RETRY);
    }
    let delay = ctx.backoffs.next(ObjectRef::from_obj(replay.as_ref()));
    warn!(
        namespace = replay.namespace().unwrap_or_default(),
        name = replay.name_any(),
        error = %error,
        "EventReplay reconcile failed"
    );
    // Requeue with backoff: errors are transient (Kafka or the API server unreachable).
    Action::requeue(delay)
}

/// The operator's part of the status (the Job writes `result` itself).
fn status(
    replay: &EventReplay,
    phase: ReplayPhase,
    message: String,
    principal: Option<String>,
) -> EventReplayStatus {
    let old = replay.status.clone().unwrap_or_default();
    let now = Timestamp::now().to_string();
    let condition = |type_: &str, on: bool, reason: &str| {
        let status = if on {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        };
        let kept = old
            .conditions
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map(|c| c.last_transition_time.clone());
        Condition {
            type_: type_.to_owned(),
            status,
            reason: reason.to_owned(),
            message: message.clone(),
            observed_generation: replay.metadata.generation,
            last_transition_time: kept.unwrap_or_else(|| now.clone()),
        }
    };
    let reason = format!("{phase:?}");
    EventReplayStatus {
        phase: Some(phase),
        job_name: Some(plan::object_name(replay)),
        principal,
        start_time: old.start_time.clone().or_else(|| Some(now.clone())),
        result: None,
        conditions: vec![
            condition(
                crate::status::READY,
                phase == ReplayPhase::Succeeded,
                &reason,
            ),
            condition(crate::status::RECONCILING, !phase.is_finished(), &reason),
            condition(
                crate::status::STALLED,
                phase == ReplayPhase::Failed,
                &reason,
            ),
        ],
        message: Some(message),
    }
}

async fn write_status(
    api: &Api<EventReplay>,
    replay: &EventReplay,
    status: &EventReplayStatus,
) -> Result<()> {
    crate::reconcile::apply_status(api, &replay.name_any(), MANAGER, status).await?;
    Ok(())
}

async fn apply(replay: &EventReplay, ctx: &Context, namespace: &str) -> Result<Action> {
    let api = Api::<EventReplay>::namespaced(ctx.client.clone(), namespace);
    let current = replay.status.clone().unwrap_or_default();
    let phase = current.phase.unwrap_or_default();
    if phase.is_finished() {
        if current.principal.is_some() {
            remove_principal(replay, ctx).await?;
            let message = current.message.clone().unwrap_or_default();
            write_status(&api, replay, &status(replay, phase, message, None)).await?;
        }
        return Ok(Action::await_change());
    }
    // The Job reported: its outcome becomes the phase, a condition and an Event.
    if let Some(result) = &current.result {
        let (phase, type_, reason) = if result.outcome == "Succeeded" {
            (ReplayPhase::Succeeded, EventType::Normal, "Replayed")
        } else {
            (ReplayPhase::Failed, EventType::Warning, "ReplayFailed")
        };
        remove_principal(replay, ctx).await?;
        write_status(
            &api,
            replay,
            &status(replay, phase, result.message.clone(), None),
        )
        .await?;
        info!(namespace, name = replay.name_any(), outcome = %result.outcome, "replay finished");
        replay
            .publish(&ctx.events, type_, reason, "Replay", result.message.clone())
            .await;
        return Ok(Action::await_change());
    }
    // The Job ended without a report (its pod never started, or died): that is the outcome.
    let jobs = Api::<Job>::namespaced(ctx.client.clone(), namespace);
    if let Some(job) = jobs.get_opt(&plan::object_name(replay)).await?
        && job.status.as_ref().and_then(|s| s.failed).unwrap_or(0) > 0
    {
        let message = format!(
            "the replay Job {} failed without reporting a result; see `kubectl logs job/{}`",
            plan::object_name(replay),
            plan::object_name(replay)
        );
        return fail(replay, ctx, &api, message).await;
    }
    // Otherwise: make what the Job needs, then the Job.
    let consumers = Api::<EventConsumer>::namespaced(ctx.client.clone(), namespace);
    let Some(consumer) = consumers.get_opt(&replay.spec.consumer).await? else {
        let message = format!(
            "EventConsumer {namespace}/{} not found",
            replay.spec.consumer
        );
        return fail(replay, ctx, &api, message).await;
    };
    let Some(resolved) = plan::resolve(&consumer) else {
        let message = format!(
            "waiting for EventConsumer {} to have its topics (status.topics)",
            replay.spec.consumer
        );
        write_status(
            &api,
            replay,
            &status(replay, ReplayPhase::Pending, message, None),
        )
        .await?;
        // Requeue: the consumer controller's status write does not wake EventReplays.
        return Ok(Action::requeue(WAIT_FOR_CONSUMER));
    };
    let destinations = match plan::destinations(replay, &resolved) {
        Ok(d) => d,
        Err(refusal) => return fail(replay, ctx, &api, refusal).await,
    };
    ensure_credential(replay, ctx, namespace).await?;
    ctx.admin
        .create_acls(&plan::acls(replay, &resolved, &destinations))
        .await?;
    ensure_ledger(&consumer, ctx, namespace).await?;
    if replay.spec.dry_run {
        let configmaps = Api::<ConfigMap>::namespaced(ctx.client.clone(), namespace);
        match configmaps
            .create(&PostParams::default(), &plan::selection_configmap(replay))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    let ssa = PatchParams::apply(MANAGER).force();
    let name = plan::object_name(replay);
    Api::<ServiceAccount>::namespaced(ctx.client.clone(), namespace)
        .patch(
            &name,
            &ssa,
            &Patch::Apply(&typed(plan::service_account(replay))),
        )
        .await?;
    Api::<Role>::namespaced(ctx.client.clone(), namespace)
        .patch(&name, &ssa, &Patch::Apply(&typed(plan::role(replay))))
        .await?;
    Api::<RoleBinding>::namespaced(ctx.client.clone(), namespace)
        .patch(
            &name,
            &ssa,
            &Patch::Apply(&typed(plan::role_binding(replay))),
        )
        .await?;
    if jobs.get_opt(&name).await?.is_none() {
        let job = plan::job(replay, &resolved, &replay.spec.consumer, &ctx.worker);
        jobs.create(&PostParams::default(), &job).await?;
        info!(namespace, name = replay.name_any(), job = %name, "replay Job started");
    }
    let message = format!(
        "the Job {name} replays as {} from {}",
        plan::principal(replay),
        resolved.dead_letter_topic
    );
    write_status(
        &api,
        replay,
        &status(
            replay,
            ReplayPhase::Running,
            message,
            Some(plan::principal(replay)),
        ),
    )
    .await?;
    // The Job's report (a status change) or its end (an owned Job change) wakes this again.
    Ok(Action::await_change())
}

/// A k8s-openapi object with its apiVersion and kind, as server-side apply wants it.
fn typed<K: Resource<DynamicType = ()> + serde::Serialize>(object: K) -> serde_json::Value {
    let mut value = serde_json::to_value(&object).unwrap_or_default();
    value["apiVersion"] = K::api_version(&()).into();
    value["kind"] = K::kind(&()).into();
    value
}

async fn fail(
    replay: &EventReplay,
    ctx: &Context,
    api: &Api<EventReplay>,
    message: String,
) -> Result<Action> {
    remove_principal(replay, ctx).await?;
    write_status(
        api,
        replay,
        &status(replay, ReplayPhase::Failed, message.clone(), None),
    )
    .await?;
    replay
        .publish(
            &ctx.events,
            EventType::Warning,
            "ReplayFailed",
            "Replay",
            message,
        )
        .await;
    Ok(Action::await_change())
}

/// The principal's SCRAM credential: Kafka first, then the Secret (so the Secret only ever
/// holds a password Kafka accepts; a crash in between makes a new one next time).
async fn ensure_credential(replay: &EventReplay, ctx: &Context, namespace: &str) -> Result<()> {
    let secrets = Api::<Secret>::namespaced(ctx.client.clone(), namespace);
    let name = plan::object_name(replay);
    if secrets.get_opt(&name).await?.is_some() {
        return Ok(());
    }
    let username = plan::username(replay);
    let password = credentials::new_password();
    ctx.admin
        .upsert_scram_credential(&username, &password)
        .await?;
    let secret = Secret {
        metadata: plan::secret_meta(replay),
        string_data: Some(
            [
                ("username".to_owned(), username),
                ("password".to_owned(), password),
            ]
            .into(),
        ),
        ..Secret::default()
    };
    match secrets.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The consumer's ledger ConfigMap, created empty if it does not exist, so the Job needs only
/// get and patch on it (never create, which RBAC cannot limit to one name).
async fn ensure_ledger(consumer: &EventConsumer, ctx: &Context, namespace: &str) -> Result<()> {
    let configmaps = Api::<ConfigMap>::namespaced(ctx.client.clone(), namespace);
    let name = plan::ledger_name(&consumer.name_any());
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some([("ferry.dev/replays-of".to_owned(), consumer.name_any())].into()),
            owner_references: plan::ledger_owner(consumer).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    };
    match configmaps.create(&PostParams::default(), &cm).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Removes the replay principal's ACLs and credential (idempotent), and its Secret.
async fn remove_principal(replay: &EventReplay, ctx: &Context) -> Result<()> {
    let held = ctx
        .admin
        .describe_acls(Some(&plan::principal(replay)))
        .await?;
    if !held.is_empty() {
        ctx.admin.delete_acls(&held).await?;
    }
    // A user without a credential (already removed, never made) is not an error.
    ctx.admin
        .delete_scram_credential(&plan::username(replay))
        .await?;
    if let Some(ns) = replay.namespace() {
        let secrets = Api::<Secret>::namespaced(ctx.client.clone(), &ns);
        match secrets
            .delete(&plan::object_name(replay), &Default::default())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
