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
    let result = converge(ctx, &grants, &secrets).await;
    if let Err(error) = &result {
        // Tell the owners of the affected resources, not only the operator's log.
        let note = ferry_common::errors::chain(error);
        for resource in grants.referenced_by.values().flatten() {
            publish(ctx, resource, EventType::Warning, "AccessFailed", &note).await;
        }
    }
    let failure = result.as_ref().err().map(failure);
    let findings = record_access(ctx, &topics, &consumers, failure.as_ref());
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
    result
}

/// Records in the book what each live resource declares and whether Kafka holds it.
fn record_access(
    ctx: &Context,
    topics: &[EventTopic],
    consumers: &[EventConsumer],
    failure: Option<&Failure>,
) -> HashMap<ResourceKey, Access> {
    let entry = |generation, grants: grants::Grants| {
        let declared = declared_access(&grants);
        let failure = failure.filter(|_| !declared.principals.is_empty()).cloned();
        Access {
            generation,
            declared,
            failure,
        }
    };
    let mut findings = HashMap::new();
    for topic in topics {
        let key = (
            access::Kind::EventTopic,
            topic.namespace().unwrap_or_default(),
            topic.name_any(),
        );
        let grants = grants::from_resources(std::slice::from_ref(topic), &[]);
        findings.insert(key, entry(topic.metadata.generation, grants));
    }
    for consumer in consumers {
        let key = (
            access::Kind::EventConsumer,
            consumer.namespace().unwrap_or_default(),
            consumer.name_any(),
        );
        // The topics only resolve the consumer's topic names; their producers are theirs.
        let grants = grants::Grants {
            producers: Vec::new(),
            ..grants::from_resources(topics, std::slice::from_ref(consumer))
        };
        findings.insert(key, entry(consumer.metadata.generation, grants));
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

/// `User:ns.sa WRITE Topic:orders`: one ACL as a person reads it.
fn describe_acl(binding: &AclBinding) -> String {
    format!(
        "{} {} {:?}:{}",
        binding.principal,
        format!("{:?}", binding.operation).to_uppercase(),
        binding.resource_type,
        binding.resource_name
    )
}

/// How a failed pass shows in the `AccessGranted` condition.
fn failure(error: &Error) -> Failure {
    let (reason, transient) = match error {
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

/// Makes Kafka and the credential Secrets match `grants`.
async fn converge(
    ctx: &Context,
    grants: &grants::Grants,
    secrets: &BTreeMap<Identity, Secret>,
) -> Result<Report> {
    let wanted = grants.identities();
    let mut report = Report::default();

    ensure_credentials(ctx, &wanted, secrets, &mut report).await?;

    // ACLs: the principals Ferry manages are the declared ones and those with a credential.
    let desired = acl::desired_acls(&grants.producers, &grants.consumers);
    let managed: BTreeSet<String> = secrets
        .keys()
        .map(|(ns, sa)| acl::principal(ns, sa))
        .collect();
    let actual = ctx.admin.describe_acls(None).await?;
    let AclDiff { create, delete } = acl::diff(&desired, &actual, &managed);
    report.acls_created = create.len();
    report.acls_deleted = delete.len();
    if !create.is_empty() {
        ctx.admin.create_acls(&create).await?;
    }
    if !delete.is_empty() {
        ctx.admin.delete_acls(&delete).await?;
    }
    publish_acl_events(ctx, &grants.referenced_by, &create, &delete).await;

    // Identities nobody declares any more: their ACLs went above; now the credential, then
    // the Secret (last, so a crash before it leaves a record that the principal is managed).
    for (ns, sa) in secrets.keys().filter(|id| !wanted.contains(*id)) {
        ctx.admin
            .delete_scram_credential(&acl::username(ns, sa))
            .await?;
        let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
        match api
            .delete(&credentials::secret_name(sa), &DeleteParams::default())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
        info!(principal = %acl::principal(ns, sa), "identity removed: no resource declares it");
        report.identities_removed += 1;
    }
    Ok(report)
}

/// Makes sure every wanted identity has a SCRAM credential in Kafka and a Secret that matches
/// it; creates or rotates passwords where needed.
async fn ensure_credentials(
    ctx: &Context,
    wanted: &BTreeSet<Identity>,
    secrets: &BTreeMap<Identity, Secret>,
    report: &mut Report,
) -> Result<()> {
    for (ns, sa) in wanted {
        let username = acl::username(ns, sa);
        let existing = secrets.get(&(ns.clone(), sa.clone()));
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
