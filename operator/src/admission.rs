//! The tenancy admission policy: what a CRD's CEL cannot check because it cannot see the
//! namespace, refused by the API server itself at `kubectl apply` with a sentence a person
//! understands.
//!
//! A ValidatingAdmissionPolicy (admissionregistration.k8s.io/v1, GA since Kubernetes 1.30) runs
//! CEL inside the API server, with the request's namespace at hand: no webhook, nothing to be
//! down. `crdgen` writes it and its binding into `crds/` beside the CRDs. The operator enforces
//! the same rules ([`crate::identity::grants`]) so a cluster without the policy grants nothing
//! it should not; the policy turns that late `AccessGranted=False` into an early refusal.
//!
//! Rule: an EventConsumer's `spec.groupId` starts with `<namespace>.` (the default
//! `<namespace>.<name>` does), so no namespace joins, reads or commits for another's consumer
//! group, nor reaches its retry and dead-letter topics, which are named after the group.

use k8s_openapi::{
    api::admissionregistration::v1::{
        MatchCondition, MatchResources, NamedRuleWithOperations, ValidatingAdmissionPolicy,
        ValidatingAdmissionPolicyBinding, ValidatingAdmissionPolicyBindingSpec,
        ValidatingAdmissionPolicySpec, Validation,
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};

use crate::api::GROUP;

/// The name of the policy and of its binding.
pub const POLICY_NAME: &str = "ferry-tenancy.ferry.dev";

/// The CEL check: `spec.groupId`, when set, is `<namespace>.` and at least one character more
/// ([`crate::identity::grants::group_in_namespace`] in CEL).
const GROUP_IN_NAMESPACE: &str = "!has(object.spec.groupId) || (object.spec.groupId.startsWith(request.namespace + '.') && size(object.spec.groupId) > size(request.namespace) + 1)";

/// Only a new object or a changed `groupId` is checked ("ratcheting", as the API server does
/// for CRD validation): an update that leaves an existing groupId as it is — a finalizer added
/// or removed, a label — must pass, or an EventConsumer created before the policy could never
/// lose its finalizer and be deleted.
const GROUP_CHANGES: &str = "request.operation == 'CREATE' || (has(object.spec.groupId) ? object.spec.groupId : '') != (has(oldObject.spec.groupId) ? oldObject.spec.groupId : '')";

/// What a person reads when the apply is refused.
const GROUP_MESSAGE: &str = "'spec.groupId ' + object.spec.groupId + ' is outside namespace ' + request.namespace + ': consumer groups of this namespace (and the retry and dead-letter topics named after them) must start with \"' + request.namespace + '.\"'";

/// The policy: EventConsumers' groups stay in their namespace.
pub fn policy() -> ValidatingAdmissionPolicy {
    ValidatingAdmissionPolicy {
        metadata: ObjectMeta {
            name: Some(POLICY_NAME.to_owned()),
            ..ObjectMeta::default()
        },
        spec: Some(ValidatingAdmissionPolicySpec {
            // Fail closed: a policy that cannot be evaluated refuses rather than lets through.
            failure_policy: Some("Fail".to_owned()),
            match_constraints: Some(MatchResources {
                resource_rules: Some(vec![NamedRuleWithOperations {
                    api_groups: Some(vec![GROUP.to_owned()]),
                    api_versions: Some(vec!["*".to_owned()]),
                    operations: Some(vec!["CREATE".to_owned(), "UPDATE".to_owned()]),
                    resources: Some(vec!["eventconsumers".to_owned()]),
                    ..NamedRuleWithOperations::default()
                }]),
                ..MatchResources::default()
            }),
            match_conditions: Some(vec![MatchCondition {
                name: "group-id-set-or-changed".to_owned(),
                expression: GROUP_CHANGES.to_owned(),
            }]),
            validations: Some(vec![Validation {
                expression: GROUP_IN_NAMESPACE.to_owned(),
                message_expression: Some(GROUP_MESSAGE.to_owned()),
                reason: Some("Invalid".to_owned()),
                ..Validation::default()
            }]),
            ..ValidatingAdmissionPolicySpec::default()
        }),
        status: None,
    }
}

/// The binding that enforces the policy in every namespace.
pub fn binding() -> ValidatingAdmissionPolicyBinding {
    ValidatingAdmissionPolicyBinding {
        metadata: ObjectMeta {
            name: Some(POLICY_NAME.to_owned()),
            ..ObjectMeta::default()
        },
        spec: Some(ValidatingAdmissionPolicyBindingSpec {
            policy_name: Some(POLICY_NAME.to_owned()),
            validation_actions: Some(vec!["Deny".to_owned()]),
            ..ValidatingAdmissionPolicyBindingSpec::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_matches_event_consumers_and_checks_the_group() {
        let policy = policy();
        let spec = policy.spec.expect("spec");
        let rules = spec
            .match_constraints
            .and_then(|m| m.resource_rules)
            .expect("rules");
        assert_eq!(
            rules[0].resources.as_deref(),
            Some(&["eventconsumers".to_owned()][..])
        );
        let validation = &spec.validations.expect("validations")[0];
        assert!(validation.expression.contains("request.namespace + '.'"));
        assert!(
            validation
                .message_expression
                .as_deref()
                .is_some_and(|m| m.contains("must start with"))
        );
        let binding = binding();
        assert_eq!(
            binding.spec.and_then(|s| s.policy_name).as_deref(),
            Some(POLICY_NAME)
        );
    }
}
