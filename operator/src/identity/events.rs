//! The Events a pass records: ACL changes on the resources whose principal they concern, and
//! failures on the resources they concern (one identity's failure only on the resources that
//! declare that identity; a failure of the whole pass on every resource).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::EventType;

use super::{
    Context, Error,
    failures::Failures,
    grants::{Grants, Identity},
    principal,
};
use crate::kafka::AclBinding;

/// Warns the owners of the resources a failure concerns, and nobody else.
pub async fn access_failed(
    ctx: &Context,
    grants: &Grants,
    pass_failure: Option<&Error>,
    failures: &Failures,
) {
    if let Some(error) = pass_failure {
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
}

/// One Event per resource whose principal's ACLs changed, naming the principal and the change.
pub async fn acls_changed(
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
        let principal = principal::principal(ns, sa);
        let Some(changes) = notes.get(principal.as_str()) else {
            continue;
        };
        let note = format!("{principal}: {}", changes.join(", "));
        for resource in resources {
            publish(ctx, resource, EventType::Normal, "AclsChanged", &note).await;
        }
    }
}

/// Records an Event on a resource named `Kind/namespace/name`.
async fn publish(ctx: &Context, resource: &str, type_: EventType, reason: &str, note: &str) {
    if let Some(reference) = object_reference(resource) {
        ctx.events
            .publish(&reference, type_, reason, "Reconcile", note)
            .await;
    }
}

/// The reference of a resource named `Kind/namespace/name`, as the grants name it.
fn object_reference(resource: &str) -> Option<ObjectReference> {
    let mut parts = resource.splitn(3, '/');
    let (kind, namespace, name) = (parts.next()?, parts.next()?, parts.next()?);
    Some(ObjectReference {
        api_version: Some("ferry.dev/v1alpha1".into()),
        kind: Some(kind.into()),
        namespace: Some(namespace.into()),
        name: Some(name.into()),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_are_referenced_by_kind_namespace_and_name() {
        let r = object_reference("EventConsumer/shop/notify").expect("a reference");
        assert_eq!(r.kind.as_deref(), Some("EventConsumer"));
        assert_eq!(r.namespace.as_deref(), Some("shop"));
        assert_eq!(r.name.as_deref(), Some("notify"));
        assert!(object_reference("EventTopic/shop").is_none());
    }
}
