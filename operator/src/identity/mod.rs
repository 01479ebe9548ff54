//! Kafka identities and least-privilege ACLs, derived from what is declared (DESIGN §3).
//!
//! ```text
//!  EventTopic ─┐ watch (any change)      ┌─ credential Secret + SCRAM user per service account
//!  EventConsumer┼──────────────▶ reconcile_all ─┤
//!  Secret ─────┘  + periodic resync      └─ ACLs: create missing, delete undeclared
//! ```
//!
//! ACLs depend on every resource at once (a service account may produce to one topic and
//! consume from three), so this controller is level-triggered over the whole scope: any change
//! wakes it, it reads all resources, derives the complete desired state and makes Kafka match.
//! It manages exactly the principals that are declared or still hold a Ferry credential Secret,
//! and never reads or changes any other principal's ACLs.
//!
//! Each pass also records, per resource, the principals and ACLs it declares and whether Kafka
//! holds them ([`crate::access::AccessBook`]): the EventTopic controller folds that into the
//! EventTopic's status; EventConsumer status (no other writer yet) is written here.
//!
//! Grants follow ownership ([`grants`]): a conflicting EventTopic, a consumer group outside its
//! namespace or a dead-letter topic that is not the namespace's own grants nothing, and the
//! resource's `AccessGranted` condition says why. Failures stay with whom they concern: a
//! failure of one identity (its namespace refuses the Secret, Kafka refuses its ACLs) is shown
//! on the resources that declare that identity only, as an Event and a condition, and the
//! other identities still converge; only what concerns everyone (Kafka unreachable, its ACLs
//! unreadable) is reported on every resource.
//!
//! Order matters for crash safety: a new password reaches Kafka before the Secret that hands it
//! out, and a principal's ACLs go before its credential and Secret. Every step is idempotent, so
//! a crash anywhere is repaired by the next pass.

pub mod credentials;
pub mod grants;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    hash::{Hash, Hasher},
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams},
    runtime::{
        WatchStreamExt,
        events::{Event, EventType, Recorder},
        watcher,
    },
};
use tracing::{info, warn};

use crate::{
    access::{self, Access, AccessBook, Failure, ResourceKey},
    acl::{self, AclDiff},
    api::{AccessStatus, EventConsumer, EventTopic},
    kafka::{self, AclBinding, KafkaAdmin},
};
use credentials::ClientSettings;
use grants::Identity;

/// The field manager of everything this controller writes.
const MANAGER: &str = "ferry-operator";
/// Waits this long after a change for more to arrive, so a `kubectl apply -f dir/` of many
/// resources costs one pass, not one per resource.
const DEBOUNCE: Duration = Duration::from_millis(300);
/// First and longest wait before retrying a failed pass (doubling in between).
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);

/// Why a pass failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API request failed")]
    Kube(#[from] kube::Error),
    #[error("Kafka admin request failed")]
    Kafka(#[from] kafka::Error),
}

impl Error {
    /// A bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Kafka(_) => "kafka",
        }
    }
}

/// Results of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What one pass changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub acls_created: usize,
    pub acls_deleted: usize,
    pub credentials_created: usize,
    pub credentials_rotated: usize,
    pub identities_removed: usize,
}

/// Everything the controller needs.
#[derive(Clone)]
pub struct Context {
    pub client: Client,
    pub admin: KafkaAdmin,
    pub settings: ClientSettings,
    /// Watch one namespace, or all with `None`.
    pub namespace: Option<String>,
    pub recorder: Recorder,
    /// Which credentials this process has pushed to Kafka since the last resync.
    pub asserted: Asserted,
    /// Where each pass records what every resource was granted, for the status writers.
    pub book: AccessBook,
}

/// The credentials this process has pushed to Kafka, so a pass triggered by a change does not
/// push every credential again. Kafka cannot be asked which users exist (see
/// `kafka/scram.rs`), so every resync forgets this and re-asserts all credentials: a
/// credential lost in Kafka comes back within one resync interval.
#[derive(Debug, Clone, Default)]
pub struct Asserted(Arc<Mutex<HashMap<String, u64>>>);

impl Asserted {
    fn fingerprint(password: &str) -> u64 {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        password.hash(&mut hasher);
        hasher.finish()
    }

    fn contains(&self, user: &str, password: &str) -> bool {
        let map = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        map.get(user) == Some(&Self::fingerprint(password))
    }

    fn record(&self, user: &str, password: &str) {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        map.insert(user.to_owned(), Self::fingerprint(password));
    }

    /// Forgets everything, so the next pass pushes every credential again.
    pub fn forget(&self) {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clear();
    }
}

impl Context {
    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        match &self.namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        }
    }
}

/// Runs until `shutdown` completes: a pass after every change (debounced), every `resync`
/// (to repair drift made directly in Kafka), and after failures with backoff.
pub async fn run(ctx: Context, resync: Duration, shutdown: impl Future<Output = ()>) {
    let config = watcher::Config::default();
    let secrets =
        watcher::Config::default().labels(&format!("{}=scram", credentials::CREDENTIAL_LABEL));
    let changes = stream::select_all([
        watcher(ctx.api::<EventTopic>(), config.clone())
            .default_backoff()
            .map(|_| ())
            .boxed(),
        watcher(ctx.api::<EventConsumer>(), config)
            .default_backoff()
            .map(|_| ())
            .boxed(),
        watcher(ctx.api::<Secret>(), secrets)
            .default_backoff()
            .map(|_| ())
            .boxed(),
    ]);
    tokio::pin!(changes);
    tokio::pin!(shutdown);
    let mut retry = RETRY_MIN;
    loop {
        match reconcile_all(&ctx).await {
            Ok(report) => {
                retry = RETRY_MIN;
                if report != Report::default() {
                    info!(?report, "identities and ACLs reconciled");
                }
            }
            Err(error) => {
                warn!(error = %error, cause = ?error, retry_in = ?retry, "identity reconcile failed");
                tokio::select! {
                    () = tokio::time::sleep(retry) => {}
                    () = &mut shutdown => return,
                }
                retry = (retry * 2).min(RETRY_MAX);
                continue;
            }
        }
        tokio::select! {
            Some(()) = changes.next() => {}
            () = tokio::time::sleep(resync) => ctx.asserted.forget(),
            () = &mut shutdown => return,
        }
        // Let a burst of changes settle, then take them all in one pass.
        let settle = tokio::time::sleep(DEBOUNCE);
        tokio::pin!(settle);
        loop {
            tokio::select! {
                Some(()) = changes.next() => {}
                () = &mut settle => break,
            }
        }
    }
}

/// One pass over the whole scope: credentials, then ACLs, then removal of identities no longer
/// declared.
pub async fn reconcile_all(ctx: &Context) -> Result<Report> {
    let topics = ctx
        .api::<EventTopic>()
        .list(&ListParams::default())
        .await?
        .items;
    let consumers = ctx
        .api::<EventConsumer>()
        .list(&ListParams::default())
        .await?
        .items;
    let secret_list =
        ListParams::default().labels(&format!("{}=scram", credentials::CREDENTIAL_LABEL));
    let secrets: BTreeMap<Identity, Secret> = ctx
        .api::<Secret>()
        .list(&secret_list)
        .await?
        .items
        .into_iter()
        .filter_map(|s| {
            let ns = s.namespace()?;
            let sa = s.name_any().strip_prefix("ferry-kafka-")?.to_owned();
            Some(((ns, sa), s))
        })
        .collect();

    let grants = grants::from_resources(&topics, &consumers);
    let mut failures = Failures::default();
    let result = converge(ctx, &grants, &secrets, &mut failures).await;
    // Tell the owners of the affected resources, and nobody else: a failure that concerns
    // every resource (Kafka unreachable) goes to all, one identity's failure only to the
    // resources that declare that identity.
    if let Err(error) = &result {
        let note = ferry_common::errors::chain(error);
        for resource in grants.referenced_by.values().flatten() {
            publish(ctx, resource, EventType::Warning, "AccessFailed", &note).await;
        }
    }
    for (identity, error) in &failures.by_identity {
        let note = ferry_common::errors::chain(error);
        for resource in grants.referenced_by.get(identity).into_iter().flatten() {
            publish(ctx, resource, EventType::Warning, "AccessFailed", &note).await;
        }
    }
    let findings = record_access(
        ctx,
        &topics,
        &consumers,
        &grants,
        result.as_ref().err(),
        &failures,
    );
    for consumer in &consumers {
        let key = (
            access::Kind::EventConsumer,
            consumer.namespace().unwrap_or_default(),
            consumer.name_any(),
        );
        if let Some(entry) = findings.get(&key)
            && let Err(e) = write_consumer_status(ctx, consumer, entry).await
        {
            warn!(error = %e, consumer = %consumer.name_any(), "cannot write EventConsumer status");
        }
    }
    // Any failure fails the pass, so it is retried with backoff; the rest has converged.
    let report = result?;
    match failures.into_first() {
        Some(error) => Err(error),
        None => Ok(report),
    }
}

/// What a pass could not do, kept apart by whom it concerns, so one team's problem (a Secret
/// its namespace refuses, an ACL Kafka refuses for its principal) neither stops the others'
/// access nor shows on their resources.
#[derive(Debug, Default)]
struct Failures {
    /// Failures of one identity: shown on the resources that declare it.
    by_identity: BTreeMap<Identity, Error>,
    /// Failures no declared resource is concerned with (removing an identity nobody declares).
    unattributed: Option<Error>,
}

impl Failures {
    fn of_identity(&mut self, identity: Identity, error: Error) {
        warn!(error = %error, cause = ?error, principal = %acl::principal(&identity.0, &identity.1), "identity not converged");
        self.by_identity.entry(identity).or_insert(error);
    }

    fn unattributed(&mut self, error: Error) {
        warn!(error = %error, cause = ?error, "identity clean-up failed");
        self.unattributed.get_or_insert(error);
    }

    /// One of the failures, to fail the pass with.
    fn into_first(self) -> Option<Error> {
        self.by_identity.into_values().next().or(self.unattributed)
    }
}

/// Records in the book what each live resource declares and whether Kafka holds it: a
/// resource refused by [`grants`] shows its refusal; otherwise one of its own identities'
/// failures, or a failure of the whole pass.
fn record_access(
    ctx: &Context,
    topics: &[EventTopic],
    consumers: &[EventConsumer],
    grants: &grants::Grants,
    pass_failure: Option<&Error>,
    failures: &Failures,
) -> HashMap<ResourceKey, Access> {
    let by_resource = grants.by_resource();
    let none = grants::Grants::default();
    let entry = |generation, resource: &str| {
        let own = by_resource.get(resource).unwrap_or(&none);
        let declared = declared_access(own);
        let failure = match grants.refused.get(resource) {
            Some(refusal) => Some(Failure {
                reason: refusal.reason.to_owned(),
                message: refusal.message.clone(),
                transient: false,
            }),
            None if declared.principals.is_empty() => None,
            None => own
                .identities()
                .iter()
                .find_map(|id| failures.by_identity.get(id))
                .or(pass_failure)
                .map(failure),
        };
        Access {
            generation,
            declared,
            failure,
        }
    };
    let mut findings = HashMap::new();
    for topic in topics {
        let (ns, name) = (topic.namespace().unwrap_or_default(), topic.name_any());
        let resource = grants::topic_resource(&ns, &name);
        let key = (access::Kind::EventTopic, ns, name);
        findings.insert(key, entry(topic.metadata.generation, &resource));
    }
    for consumer in consumers {
        let (ns, name) = (
            consumer.namespace().unwrap_or_default(),
            consumer.name_any(),
        );
        let resource = grants::consumer_resource(&ns, &name);
        let key = (access::Kind::EventConsumer, ns, name);
        findings.insert(key, entry(consumer.metadata.generation, &resource));
    }
    ctx.book.record(findings.clone());
    findings
}

/// The principals and ACLs `grants` (of one resource) derive, as its status shows them.
fn declared_access(grants: &grants::Grants) -> AccessStatus {
    let desired = acl::desired_acls(&grants.producers, &grants.consumers);
    AccessStatus {
        principals: desired.keys().cloned().collect(),
        acls: desired.values().flatten().map(describe_acl).collect(),
    }
}

/// `User:ns.sa WRITE Topic:orders`: one ACL as a person reads it, the operation spelled as
/// Kafka's tools spell it (`DESCRIBE_CONFIGS`).
fn describe_acl(binding: &AclBinding) -> String {
    format!(
        "{} {} {:?}:{}",
        binding.principal,
        upper_snake(&format!("{:?}", binding.operation)),
        binding.resource_type,
        binding.resource_name
    )
}

/// `DescribeConfigs` → `DESCRIBE_CONFIGS`.
fn upper_snake(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 4);
    for (i, c) in camel.chars().enumerate() {
        if i > 0 && c.is_ascii_uppercase() {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// How a failed pass shows in the `AccessGranted` condition.
fn failure(error: &Error) -> Failure {
    let (reason, transient) = match error {
        // The API server refused (a quota, a policy, a namespace being deleted): a person acts.
        Error::Kube(kube::Error::Api(e)) if (400..500).contains(&e.code) && e.code != 429 => {
            ("KubernetesRefused", false)
        }
        Error::Kube(_) => ("KubernetesUnavailable", true),
        Error::Kafka(e) if e.is_unavailable() => ("KafkaUnavailable", true),
        Error::Kafka(e) if e.is_authorization() => ("KafkaNotAuthorized", false),
        Error::Kafka(_) => ("KafkaRefused", false),
    };
    Failure {
        reason: reason.to_owned(),
        message: ferry_common::errors::chain(error),
        transient,
    }
}

/// Writes an EventConsumer's `access` and `AccessGranted` condition, unless they are current.
/// (Its other status fields belong to the worker controller of a later issue.)
async fn write_consumer_status(
    ctx: &Context,
    consumer: &EventConsumer,
    entry: &Access,
) -> Result<()> {
    let generation = consumer.metadata.generation;
    let previous = consumer.status.clone().unwrap_or_default();
    let now = jiff::Timestamp::now().to_string();
    let condition = Access::state(Some(entry), generation, true).condition(
        &previous.conditions,
        generation,
        &now,
    );
    if previous.access.as_ref() == Some(&entry.declared)
        && previous.conditions == [condition.clone()]
    {
        return Ok(());
    }
    let api: Api<EventConsumer> = Api::namespaced(
        ctx.client.clone(),
        &consumer.namespace().unwrap_or_default(),
    );
    let patch = serde_json::json!({
        "apiVersion": "ferry.dev/v1alpha1",
        "kind": "EventConsumer",
        "status": {"access": entry.declared, "conditions": [condition]},
    });
    api.patch_status(
        &consumer.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

/// Makes Kafka and the credential Secrets match `grants`. A failure that concerns everyone
/// (Kafka unreachable, the ACLs unreadable) fails the pass; one identity's failure is recorded
/// in `failures` and the others converge.
async fn converge(
    ctx: &Context,
    grants: &grants::Grants,
    secrets: &BTreeMap<Identity, Secret>,
    failures: &mut Failures,
) -> Result<Report> {
    let wanted = grants.identities();
    let mut report = Report::default();

    // First what concerns everyone: reading Kafka's ACLs.
    let actual = ctx.admin.describe_acls(None).await?;

    ensure_credentials(ctx, &wanted, secrets, &mut report, failures).await;

    // ACLs: the principals Ferry manages are the declared ones and those with a credential.
    let desired = acl::desired_acls(&grants.producers, &grants.consumers);
    let managed: BTreeSet<String> = secrets
        .keys()
        .map(|(ns, sa)| acl::principal(ns, sa))
        .collect();
    let AclDiff { create, delete } = acl::diff(&desired, &actual, &managed);
    let created = change_acls(ctx, AclChange::Create, create, failures).await?;
    let deleted = change_acls(ctx, AclChange::Delete, delete, failures).await?;
    report.acls_created = created.len();
    report.acls_deleted = deleted.len();
    publish_acl_events(ctx, &grants.referenced_by, &created, &deleted).await;

    // Identities nobody declares any more: their ACLs went above; now the credential, then
    // the Secret (last, so a crash before it leaves a record that the principal is managed).
    for (ns, sa) in secrets.keys().filter(|id| !wanted.contains(*id)) {
        match remove_identity(ctx, ns, sa).await {
            Ok(()) => {
                info!(principal = %acl::principal(ns, sa), "identity removed: no resource declares it");
                report.identities_removed += 1;
            }
            Err(e) => failures.unattributed(e),
        }
    }
    Ok(report)
}

/// Deletes the credential of an identity nobody declares, then its Secret.
async fn remove_identity(ctx: &Context, ns: &str, sa: &str) -> Result<()> {
    ctx.admin
        .delete_scram_credential(&acl::username(ns, sa))
        .await?;
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    match api
        .delete(&credentials::secret_name(sa), &DeleteParams::default())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Whether ACLs are created or deleted.
#[derive(Debug, Clone, Copy)]
enum AclChange {
    Create,
    Delete,
}

/// Creates or deletes `bindings` in one request; if Kafka refuses it, again one principal at
/// a time, so a refusal is pinned on the principal it concerns and the others still converge.
/// Returns the bindings changed; fails only for what concerns all (Kafka unreachable, the
/// operator's admin not authorized).
async fn change_acls(
    ctx: &Context,
    change: AclChange,
    bindings: Vec<AclBinding>,
    failures: &mut Failures,
) -> Result<Vec<AclBinding>> {
    async fn apply(ctx: &Context, change: AclChange, bindings: &[AclBinding]) -> kafka::Result<()> {
        match change {
            AclChange::Create => ctx.admin.create_acls(bindings).await,
            AclChange::Delete => ctx.admin.delete_acls(bindings).await.map(|_| ()),
        }
    }
    if bindings.is_empty() {
        return Ok(bindings);
    }
    let refused = match apply(ctx, change, &bindings).await {
        Ok(()) => return Ok(bindings),
        // Kafka unreachable, or the operator's own admin lacks the right: everyone's problem.
        Err(e) if e.is_unavailable() || e.is_authorization() => return Err(e.into()),
        Err(e) => e,
    };
    let mut by_principal: BTreeMap<String, Vec<AclBinding>> = BTreeMap::new();
    for b in bindings {
        by_principal.entry(b.principal.clone()).or_default().push(b);
    }
    if by_principal.len() == 1
        && let Some(principal) = by_principal.keys().next()
    {
        // Nothing to tell apart: the refusal is this principal's.
        record_principal_failure(failures, principal, refused.into());
        return Ok(Vec::new());
    }
    let mut changed = Vec::new();
    for (principal, bindings) in by_principal {
        match apply(ctx, change, &bindings).await {
            Ok(()) => changed.extend(bindings),
            Err(e) if e.is_unavailable() => return Err(e.into()),
            Err(e) => record_principal_failure(failures, &principal, e.into()),
        }
    }
    Ok(changed)
}

/// Pins a failure on the identity of a Ferry principal (`User:<ns>.<sa>`).
fn record_principal_failure(failures: &mut Failures, principal: &str, error: Error) {
    match principal
        .strip_prefix("User:")
        .and_then(|user| user.split_once('.'))
    {
        Some((ns, sa)) => failures.of_identity((ns.to_owned(), sa.to_owned()), error),
        None => failures.unattributed(error),
    }
}

/// Makes sure every wanted identity has a SCRAM credential in Kafka and a Secret that matches
/// it; creates or rotates passwords where needed. One identity's failure is recorded and does
/// not stop the others.
async fn ensure_credentials(
    ctx: &Context,
    wanted: &BTreeSet<Identity>,
    secrets: &BTreeMap<Identity, Secret>,
    report: &mut Report,
    failures: &mut Failures,
) {
    for identity in wanted {
        let existing = secrets.get(identity);
        if let Err(e) = ensure_credential(ctx, identity, existing, report).await {
            failures.of_identity(identity.clone(), e);
        }
    }
}

/// One identity's credential in Kafka and its Secret.
async fn ensure_credential(
    ctx: &Context,
    (ns, sa): &Identity,
    existing: Option<&Secret>,
    report: &mut Report,
) -> Result<()> {
    let username = acl::username(ns, sa);
    let stored = existing.and_then(credentials::stored_password);
    let rotate = existing.is_some_and(credentials::rotation_requested);
    let (password, changed) = match stored {
        Some(password) if !rotate => (password, false),
        _ => (credentials::new_password(), true),
    };
    if changed || !ctx.asserted.contains(&username, &password) {
        // Kafka first: the Secret only ever hands out a password Kafka accepts (or one that
        // the next pass will push again).
        ctx.admin
            .upsert_scram_credential(&username, &password)
            .await?;
        ctx.asserted.record(&username, &password);
    }
    let secret = credentials::secret(ns, sa, &username, &password, &ctx.settings);
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    api.patch(
        &credentials::secret_name(sa),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&secret),
    )
    .await?;
    if rotate {
        // The annotation was set by a person, not by our apply: remove it explicitly.
        let unset = serde_json::json!({"metadata": {"annotations": {credentials::ROTATE_ANNOTATION: null}}});
        api.patch(
            &credentials::secret_name(sa),
            &PatchParams::default(),
            &Patch::Merge(&unset),
        )
        .await?;
        info!(principal = %acl::principal(ns, sa), "credential rotated");
        report.credentials_rotated += 1;
    } else if changed {
        info!(principal = %acl::principal(ns, sa), "credential created");
        report.credentials_created += 1;
    }
    Ok(())
}

/// One Event per resource whose principal's ACLs changed, naming the principal and the change.
async fn publish_acl_events(
    ctx: &Context,
    referenced_by: &BTreeMap<Identity, BTreeSet<String>>,
    created: &[AclBinding],
    deleted: &[AclBinding],
) {
    let mut notes: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (sign, bindings) in [("+", created), ("-", deleted)] {
        for b in bindings {
            notes.entry(&b.principal).or_default().push(format!(
                "{sign}{:?} {:?} {}",
                b.operation, b.resource_type, b.resource_name
            ));
        }
    }
    for ((ns, sa), resources) in referenced_by {
        let principal = acl::principal(ns, sa);
        let Some(changes) = notes.get(principal.as_str()) else {
            continue;
        };
        let note = format!("{principal}: {}", changes.join(", "));
        for resource in resources {
            publish(ctx, resource, EventType::Normal, "AclsChanged", &note).await;
        }
    }
}

/// Records an Event on a resource named `Kind/namespace/name`; a failure is only logged.
async fn publish(ctx: &Context, resource: &str, type_: EventType, reason: &str, note: &str) {
    let Some(reference) = object_reference(resource) else {
        return;
    };
    // The Events API caps notes at 1 kB.
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &reference).await {
        warn!(error = %e, %resource, "could not record an Event");
    }
}

fn object_reference(resource: &str) -> Option<k8s_openapi::api::core::v1::ObjectReference> {
    let mut parts = resource.splitn(3, '/');
    let (kind, namespace, name) = (parts.next()?, parts.next()?, parts.next()?);
    Some(k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some("ferry.dev/v1alpha1".into()),
        kind: Some(kind.into()),
        namespace: Some(namespace.into()),
        name: Some(name.into()),
        ..Default::default()
    })
}
