//! Kafka ACLs through librdkafka's CreateAcls / DescribeAcls / DeleteAcls, which rdkafka does
//! not wrap. Ferry only ever creates literal ALLOW bindings, but reads and deletes any binding,
//! so that it can remove whatever a managed principal holds beyond what is declared.

use std::{
    ffi::{CString, c_char},
    ptr,
    sync::Arc,
    time::Duration,
};

use rdkafka::{admin::AdminClient, bindings as rd, client::DefaultClientContext};

use super::{
    Error, Result,
    native::{call, code, string},
};

/// The kind of resource an ACL is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResourceType {
    Topic,
    Group,
    Cluster,
    TransactionalId,
    /// A kind this code does not name (kept so it can be deleted exactly).
    Other(u32),
}

/// Whether the resource name is one name or a prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PatternType {
    Literal,
    Prefixed,
    Other(u32),
}

/// What an ACL allows or denies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operation {
    All,
    Read,
    Write,
    Create,
    Delete,
    Alter,
    Describe,
    ClusterAction,
    DescribeConfigs,
    AlterConfigs,
    IdempotentWrite,
    Other(u32),
}

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Permission {
    Allow,
    Deny,
    Other(u32),
}

/// One ACL binding, as Kafka stores it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AclBinding {
    /// `User:<name>`.
    pub principal: String,
    pub resource_type: ResourceType,
    pub resource_name: String,
    pub pattern: PatternType,
    pub operation: Operation,
    pub permission: Permission,
    /// `*` for any host.
    pub host: String,
}

impl AclBinding {
    /// A literal ALLOW from any host: the only kind Ferry creates.
    pub fn allow(
        principal: impl Into<String>,
        resource_type: ResourceType,
        resource_name: impl Into<String>,
        operation: Operation,
    ) -> Self {
        Self {
            principal: principal.into(),
            resource_type,
            resource_name: resource_name.into(),
            pattern: PatternType::Literal,
            operation,
            permission: Permission::Allow,
            host: "*".to_owned(),
        }
    }
}

use rd::rd_kafka_AclOperation_t as Op;
use rd::rd_kafka_AclPermissionType_t as Perm;
use rd::rd_kafka_ResourcePatternType_t as Pat;
use rd::rd_kafka_ResourceType_t as Res;

fn resource_to_rd(r: ResourceType) -> Res {
    match r {
        ResourceType::Topic => Res::RD_KAFKA_RESOURCE_TOPIC,
        ResourceType::Group => Res::RD_KAFKA_RESOURCE_GROUP,
        ResourceType::Cluster => Res::RD_KAFKA_RESOURCE_BROKER,
        ResourceType::TransactionalId => Res::RD_KAFKA_RESOURCE_TRANSACTIONAL_ID,
        ResourceType::Other(_) => Res::RD_KAFKA_RESOURCE_UNKNOWN,
    }
}

fn resource_from_rd(r: Res) -> ResourceType {
    match r {
        Res::RD_KAFKA_RESOURCE_TOPIC => ResourceType::Topic,
        Res::RD_KAFKA_RESOURCE_GROUP => ResourceType::Group,
        Res::RD_KAFKA_RESOURCE_BROKER => ResourceType::Cluster,
        Res::RD_KAFKA_RESOURCE_TRANSACTIONAL_ID => ResourceType::TransactionalId,
        other => ResourceType::Other(other as u32),
    }
}

fn pattern_to_rd(p: PatternType) -> Pat {
    match p {
        PatternType::Literal => Pat::RD_KAFKA_RESOURCE_PATTERN_LITERAL,
        PatternType::Prefixed => Pat::RD_KAFKA_RESOURCE_PATTERN_PREFIXED,
        PatternType::Other(_) => Pat::RD_KAFKA_RESOURCE_PATTERN_UNKNOWN,
    }
}

fn pattern_from_rd(p: Pat) -> PatternType {
    match p {
        Pat::RD_KAFKA_RESOURCE_PATTERN_LITERAL => PatternType::Literal,
        Pat::RD_KAFKA_RESOURCE_PATTERN_PREFIXED => PatternType::Prefixed,
        other => PatternType::Other(other as u32),
    }
}

fn operation_to_rd(o: Operation) -> Op {
    match o {
        Operation::All => Op::RD_KAFKA_ACL_OPERATION_ALL,
        Operation::Read => Op::RD_KAFKA_ACL_OPERATION_READ,
        Operation::Write => Op::RD_KAFKA_ACL_OPERATION_WRITE,
        Operation::Create => Op::RD_KAFKA_ACL_OPERATION_CREATE,
        Operation::Delete => Op::RD_KAFKA_ACL_OPERATION_DELETE,
        Operation::Alter => Op::RD_KAFKA_ACL_OPERATION_ALTER,
        Operation::Describe => Op::RD_KAFKA_ACL_OPERATION_DESCRIBE,
        Operation::ClusterAction => Op::RD_KAFKA_ACL_OPERATION_CLUSTER_ACTION,
        Operation::DescribeConfigs => Op::RD_KAFKA_ACL_OPERATION_DESCRIBE_CONFIGS,
        Operation::AlterConfigs => Op::RD_KAFKA_ACL_OPERATION_ALTER_CONFIGS,
        Operation::IdempotentWrite => Op::RD_KAFKA_ACL_OPERATION_IDEMPOTENT_WRITE,
        Operation::Other(_) => Op::RD_KAFKA_ACL_OPERATION_UNKNOWN,
    }
}

fn operation_from_rd(o: Op) -> Operation {
    match o {
        Op::RD_KAFKA_ACL_OPERATION_ALL => Operation::All,
        Op::RD_KAFKA_ACL_OPERATION_READ => Operation::Read,
        Op::RD_KAFKA_ACL_OPERATION_WRITE => Operation::Write,
        Op::RD_KAFKA_ACL_OPERATION_CREATE => Operation::Create,
        Op::RD_KAFKA_ACL_OPERATION_DELETE => Operation::Delete,
        Op::RD_KAFKA_ACL_OPERATION_ALTER => Operation::Alter,
        Op::RD_KAFKA_ACL_OPERATION_DESCRIBE => Operation::Describe,
        Op::RD_KAFKA_ACL_OPERATION_CLUSTER_ACTION => Operation::ClusterAction,
        Op::RD_KAFKA_ACL_OPERATION_DESCRIBE_CONFIGS => Operation::DescribeConfigs,
        Op::RD_KAFKA_ACL_OPERATION_ALTER_CONFIGS => Operation::AlterConfigs,
        Op::RD_KAFKA_ACL_OPERATION_IDEMPOTENT_WRITE => Operation::IdempotentWrite,
        other => Operation::Other(other as u32),
    }
}

fn permission_to_rd(p: Permission) -> Perm {
    match p {
        Permission::Allow => Perm::RD_KAFKA_ACL_PERMISSION_TYPE_ALLOW,
        Permission::Deny => Perm::RD_KAFKA_ACL_PERMISSION_TYPE_DENY,
        Permission::Other(_) => Perm::RD_KAFKA_ACL_PERMISSION_TYPE_UNKNOWN,
    }
}

fn permission_from_rd(p: Perm) -> Permission {
    match p {
        Perm::RD_KAFKA_ACL_PERMISSION_TYPE_ALLOW => Permission::Allow,
        Perm::RD_KAFKA_ACL_PERMISSION_TYPE_DENY => Permission::Deny,
        other => Permission::Other(other as u32),
    }
}

/// The strings of one binding, as librdkafka takes them.
struct CBinding {
    binding: AclBinding,
    name: CString,
    principal: CString,
    host: CString,
}

impl CBinding {
    fn new(binding: &AclBinding) -> Result<Self> {
        let c = |s: &str| CString::new(s).map_err(|_| Error::BadName(s.to_owned()));
        Ok(Self {
            name: c(&binding.resource_name)?,
            principal: c(&binding.principal)?,
            host: c(&binding.host)?,
            binding: binding.clone(),
        })
    }

    /// A native binding (`filter = false`) or an exact-match filter (`filter = true`); null
    /// only for invalid arguments, which these never are.
    ///
    /// # Safety
    /// The result must be destroyed with `rd_kafka_AclBinding_destroy` while `self` lives.
    unsafe fn to_native(&self, filter: bool) -> *mut rd::rd_kafka_AclBinding_t {
        let make = if filter {
            rd::rd_kafka_AclBindingFilter_new
        } else {
            rd::rd_kafka_AclBinding_new
        };
        let mut errstr = [0 as c_char; 512];
        let b = &self.binding;
        // SAFETY: the strings are valid NUL-terminated and copied by librdkafka; errstr is a
        // writable buffer of the given size.
        unsafe {
            make(
                resource_to_rd(b.resource_type),
                self.name.as_ptr(),
                pattern_to_rd(b.pattern),
                self.principal.as_ptr(),
                self.host.as_ptr(),
                operation_to_rd(b.operation),
                permission_to_rd(b.permission),
                errstr.as_mut_ptr(),
                errstr.len(),
            )
        }
    }
}

/// Makes native bindings (or filters) of `bindings`, hands them to `request`, then destroys them.
///
/// # Safety
/// `request` must only read the array during the call.
unsafe fn with_native(
    bindings: &[CBinding],
    filter: bool,
    request: impl FnOnce(*mut *mut rd::rd_kafka_AclBinding_t, usize),
) {
    // SAFETY: each binding is destroyed below, after the request copied it.
    let mut native: Vec<_> = bindings
        .iter()
        .map(|b| unsafe { b.to_native(filter) })
        .filter(|p| !p.is_null())
        .collect();
    request(native.as_mut_ptr(), native.len());
    for b in native {
        // SAFETY: made above, destroyed once.
        unsafe { rd::rd_kafka_AclBinding_destroy(b) }
    }
}

/// Reads a native binding owned by a live result event.
///
/// # Safety
/// `b` is a valid binding owned by a live event.
unsafe fn from_native(b: *const rd::rd_kafka_AclBinding_t) -> AclBinding {
    // SAFETY: per the contract.
    unsafe {
        AclBinding {
            principal: string(rd::rd_kafka_AclBinding_principal(b)),
            resource_type: resource_from_rd(rd::rd_kafka_AclBinding_restype(b)),
            resource_name: string(rd::rd_kafka_AclBinding_name(b)),
            pattern: pattern_from_rd(rd::rd_kafka_AclBinding_resource_pattern_type(b)),
            operation: operation_from_rd(rd::rd_kafka_AclBinding_operation(b)),
            permission: permission_from_rd(rd::rd_kafka_AclBinding_permission_type(b)),
            host: string(rd::rd_kafka_AclBinding_host(b)),
        }
    }
}

/// A per-item error, if any.
///
/// # Safety
/// `error` is null or a valid error owned by a live result event.
pub(super) unsafe fn item_error(error: *const rd::rd_kafka_error_t) -> Result<()> {
    if error.is_null() {
        return Ok(());
    }
    // SAFETY: per the contract.
    let (err, message) = unsafe {
        (
            rd::rd_kafka_error_code(error),
            string(rd::rd_kafka_error_string(error)),
        )
    };
    if err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        return Ok(());
    }
    Err(Error::Request {
        code: code(err),
        message,
    })
}

type Admin = Arc<AdminClient<DefaultClientContext>>;

/// Creates the bindings (creating an existing one is a no-op in Kafka).
pub(super) async fn create_acls(
    admin: &Admin,
    acls: &[AclBinding],
    timeout: Duration,
) -> Result<()> {
    if acls.is_empty() {
        return Ok(());
    }
    let bindings = acls.iter().map(CBinding::new).collect::<Result<Vec<_>>>()?;
    call(
        admin,
        rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_CREATEACLS,
        timeout,
        move |rk, options, queue| {
            // SAFETY: the request copies the bindings during the call.
            unsafe {
                with_native(&bindings, false, |array, n| {
                    rd::rd_kafka_CreateAcls(rk, array, n, options, queue)
                })
            }
        },
        |event| {
            // SAFETY: the event is a CreateAcls result; results live as long as the event.
            unsafe {
                let result = rd::rd_kafka_event_CreateAcls_result(event);
                if result.is_null() {
                    return Err(Error::UnexpectedEvent);
                }
                let mut n = 0;
                let results = rd::rd_kafka_CreateAcls_result_acls(result, &mut n);
                for i in 0..n {
                    item_error(rd::rd_kafka_acl_result_error(*results.add(i)))?;
                }
            }
            Ok(())
        },
    )
    .await
}

/// Every binding of `principal`, or of everyone with `None`.
pub(super) async fn describe_acls(
    admin: &Admin,
    principal: Option<&str>,
    timeout: Duration,
) -> Result<Vec<AclBinding>> {
    let principal = principal
        .map(|p| CString::new(p).map_err(|_| Error::BadName(p.to_owned())))
        .transpose()?;
    call(
        admin,
        rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBEACLS,
        timeout,
        move |rk, options, queue| {
            let mut errstr = [0 as c_char; 512];
            // SAFETY: a filter matching every binding (of one principal); librdkafka copies
            // the strings, and the filter is destroyed after the request copied it.
            unsafe {
                let filter = rd::rd_kafka_AclBindingFilter_new(
                    Res::RD_KAFKA_RESOURCE_ANY,
                    ptr::null(),
                    Pat::RD_KAFKA_RESOURCE_PATTERN_ANY,
                    principal.as_ref().map_or(ptr::null(), |p| p.as_ptr()),
                    ptr::null(),
                    Op::RD_KAFKA_ACL_OPERATION_ANY,
                    Perm::RD_KAFKA_ACL_PERMISSION_TYPE_ANY,
                    errstr.as_mut_ptr(),
                    errstr.len(),
                );
                rd::rd_kafka_DescribeAcls(rk, filter, options, queue);
                rd::rd_kafka_AclBinding_destroy(filter);
            }
        },
        |event| {
            // SAFETY: the event is a DescribeAcls result; bindings are copied before it goes.
            unsafe {
                let result = rd::rd_kafka_event_DescribeAcls_result(event);
                if result.is_null() {
                    return Err(Error::UnexpectedEvent);
                }
                let mut n = 0;
                let acls = rd::rd_kafka_DescribeAcls_result_acls(result, &mut n);
                Ok((0..n).map(|i| from_native(*acls.add(i))).collect())
            }
        },
    )
    .await
}

/// Deletes exactly these bindings; returns how many Kafka removed.
pub(super) async fn delete_acls(
    admin: &Admin,
    acls: &[AclBinding],
    timeout: Duration,
) -> Result<usize> {
    if acls.is_empty() {
        return Ok(0);
    }
    let filters = acls.iter().map(CBinding::new).collect::<Result<Vec<_>>>()?;
    call(
        admin,
        rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DELETEACLS,
        timeout,
        move |rk, options, queue| {
            // SAFETY: the request copies the filters during the call.
            unsafe {
                with_native(&filters, true, |array, n| {
                    rd::rd_kafka_DeleteAcls(rk, array, n, options, queue)
                })
            }
        },
        |event| {
            let mut deleted = 0;
            // SAFETY: the event is a DeleteAcls result; responses live as long as the event.
            unsafe {
                let result = rd::rd_kafka_event_DeleteAcls_result(event);
                if result.is_null() {
                    return Err(Error::UnexpectedEvent);
                }
                let mut n = 0;
                let responses = rd::rd_kafka_DeleteAcls_result_responses(result, &mut n);
                for i in 0..n {
                    let response = *responses.add(i);
                    item_error(rd::rd_kafka_DeleteAcls_result_response_error(response))?;
                    let mut matched = 0;
                    rd::rd_kafka_DeleteAcls_result_response_matching_acls(response, &mut matched);
                    deleted += matched;
                }
            }
            Ok(deleted)
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_survive_the_round_trip_through_librdkafka_values() {
        for r in [
            ResourceType::Topic,
            ResourceType::Group,
            ResourceType::Cluster,
            ResourceType::TransactionalId,
        ] {
            assert_eq!(resource_from_rd(resource_to_rd(r)), r);
        }
        for p in [PatternType::Literal, PatternType::Prefixed] {
            assert_eq!(pattern_from_rd(pattern_to_rd(p)), p);
        }
        for o in [
            Operation::All,
            Operation::Read,
            Operation::Write,
            Operation::Create,
            Operation::Delete,
            Operation::Alter,
            Operation::Describe,
            Operation::ClusterAction,
            Operation::DescribeConfigs,
            Operation::AlterConfigs,
            Operation::IdempotentWrite,
        ] {
            assert_eq!(operation_from_rd(operation_to_rd(o)), o);
        }
        for p in [Permission::Allow, Permission::Deny] {
            assert_eq!(permission_from_rd(permission_to_rd(p)), p);
        }
    }
}
