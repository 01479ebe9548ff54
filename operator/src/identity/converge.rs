//! The Kafka side of a pass: each declared identity's SCRAM credential and Secret, its ACLs,
//! and the removal of identities nobody declares any more.
//!
//! Order matters for crash safety: a new password reaches Kafka before the Secret that hands
//! it out, and a principal's ACLs go before its credential and Secret. Every step is
//! idempotent, so a crash anywhere is repaired by the next pass. One identity's failure is
//! recorded in [`Failures`] and the others still converge; only what concerns everyone (Kafka
//! unreachable, its ACLs unreadable) fails the pass at once.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams},
};
use tracing::info;

use super::{
    Context, Result, credentials,
    desired_acls::{self, AclDiff},
    events,
    failures::Failures,
    grants::{self, Identity},
    principal,
};
use crate::{
    field_manager,
    kafka::{self, AclBinding},
};

/// What one pass changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// ACL bindings created.
    pub acls_created: usize,
    /// ACL bindings deleted.
    pub acls_deleted: usize,
    /// Credentials created for a new identity.
    pub credentials_created: usize,
    /// Passwords replaced on request.
    pub credentials_rotated: usize,
    /// Identities nobody declares any more, removed.
    pub identities_removed: usize,
}

/// Makes Kafka and the credential Secrets match `grants`. A failure that concerns everyone
/// (Kafka unreachable, the ACLs unreadable) fails the pass; one identity's failure is recorded
/// in `failures` and the others converge.
pub async fn converge(
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
    let desired = desired_acls::desired_acls(&grants.producers, &grants.consumers);
    let managed: BTreeSet<String> = secrets
        .keys()
        .map(|(ns, sa)| principal::principal(ns, sa))
        .collect();
    let AclDiff { create, delete } = desired_acls::diff(&desired, &actual, &managed);
    let created = change_acls(ctx, AclChange::Create, create, failures).await?;
    let deleted = change_acls(ctx, AclChange::Delete, delete, failures).await?;
    report.acls_created = created.len();
    report.acls_deleted = deleted.len();
    events::acls_changed(ctx, &grants.referenced_by, &created, &deleted).await;

    // Identities nobody declares any more: their ACLs went above; now the credential, then
    // the Secret (last, so a crash before it leaves a record that the principal is managed).
    for (ns, sa) in secrets.keys().filter(|id| !wanted.contains(*id)) {
        match remove_identity(ctx, ns, sa).await {
            Ok(()) => {
                info!(principal = %principal::principal(ns, sa), "identity removed: no resource declares it");
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
        .delete_scram_credential(&principal::username(ns, sa))
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
        failures.of_principal(principal, refused.into());
        return Ok(Vec::new());
    }
    let mut changed = Vec::new();
    for (principal, bindings) in by_principal {
        match apply(ctx, change, &bindings).await {
            Ok(()) => changed.extend(bindings),
            Err(e) if e.is_unavailable() => return Err(e.into()),
            Err(e) => failures.of_principal(&principal, e.into()),
        }
    }
    Ok(changed)
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
    let username = principal::username(ns, sa);
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
        &PatchParams::apply(field_manager::OPERATOR).force(),
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
        info!(principal = %principal::principal(ns, sa), "credential rotated");
        report.credentials_rotated += 1;
    } else if changed {
        info!(principal = %principal::principal(ns, sa), "credential created");
        report.credentials_created += 1;
    }
    Ok(())
}
