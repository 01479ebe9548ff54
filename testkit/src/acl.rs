//! Kafka ACLs that belong to one test: literal ALLOW bindings for a principal, created as the
//! admin and deleted when dropped, so a test can run a binary as a non-super user, grant it
//! what it needs and, later, what it was missing. rdkafka does not wrap CreateAcls/DeleteAcls,
//! so this calls librdkafka's C API (the operator's `kafka::acls` does the same for production).

use std::{
    ffi::{CString, c_char},
    time::Duration,
};

use rdkafka::{ClientConfig, admin::AdminClient, bindings as rd, client::DefaultClientContext};

use crate::{TestEnv, cleanup::run_to_completion};

/// How long librdkafka may take for one ACL request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What a binding is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AclResource {
    Topic(String),
    Group(String),
    Cluster,
}

/// What a binding allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AclOperation {
    Read,
    Write,
    Describe,
    IdempotentWrite,
}

/// ALLOW bindings of one principal, removed when dropped.
pub struct TempAcls {
    principal: String,
    bindings: Vec<(AclResource, AclOperation)>,
    admin_config: ClientConfig,
}

impl TempAcls {
    /// Allows `User:<user>` each of `bindings` (literal names, any host).
    pub async fn grant(
        env: &TestEnv,
        user: &str,
        bindings: &[(AclResource, AclOperation)],
    ) -> anyhow::Result<TempAcls> {
        let acls = TempAcls {
            principal: format!("User:{user}"),
            bindings: bindings.to_vec(),
            admin_config: env.kafka_config(),
        };
        let (config, principal, list) = (
            acls.admin_config.clone(),
            acls.principal.clone(),
            acls.bindings.clone(),
        );
        tokio::task::spawn_blocking(move || request(&config, &principal, &list, false)).await??;
        Ok(acls)
    }
}

impl Drop for TempAcls {
    fn drop(&mut self) {
        let (config, principal, list) = (
            self.admin_config.clone(),
            self.principal.clone(),
            self.bindings.clone(),
        );
        run_to_completion(async move {
            if let Err(e) = request(&config, &principal, &list, true) {
                eprintln!("testkit: cannot delete ACLs of {principal}: {e}");
            }
        });
    }
}

fn native_resource(r: &AclResource) -> (rd::rd_kafka_ResourceType_t, &str) {
    match r {
        AclResource::Topic(name) => (rd::rd_kafka_ResourceType_t::RD_KAFKA_RESOURCE_TOPIC, name),
        AclResource::Group(name) => (rd::rd_kafka_ResourceType_t::RD_KAFKA_RESOURCE_GROUP, name),
        // Kafka's cluster resource is always named "kafka-cluster".
        AclResource::Cluster => (
            rd::rd_kafka_ResourceType_t::RD_KAFKA_RESOURCE_BROKER,
            "kafka-cluster",
        ),
    }
}

fn native_operation(o: AclOperation) -> rd::rd_kafka_AclOperation_t {
    use rd::rd_kafka_AclOperation_t as Op;
    match o {
        AclOperation::Read => Op::RD_KAFKA_ACL_OPERATION_READ,
        AclOperation::Write => Op::RD_KAFKA_ACL_OPERATION_WRITE,
        AclOperation::Describe => Op::RD_KAFKA_ACL_OPERATION_DESCRIBE,
        AclOperation::IdempotentWrite => Op::RD_KAFKA_ACL_OPERATION_IDEMPOTENT_WRITE,
    }
}

/// Creates (or, with `delete`, deletes) the bindings and waits for Kafka's answer. Blocking.
fn request(
    config: &ClientConfig,
    principal: &str,
    bindings: &[(AclResource, AclOperation)],
    delete: bool,
) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = config.create()?;
    let rk = admin.inner().native_ptr();
    let principal = CString::new(principal)?;
    let host = CString::new("*")?;
    let names = bindings
        .iter()
        .map(|(r, _)| CString::new(native_resource(r).1))
        .collect::<Result<Vec<_>, _>>()?;
    let timeout_ms = i32::try_from(REQUEST_TIMEOUT.as_millis()).unwrap_or(i32::MAX);
    let mut errstr = [0 as c_char; 512];
    // SAFETY: every pointer handed to librdkafka is valid for the call (the CStrings above
    // outlive it, librdkafka copies what it keeps); each object made here is destroyed once,
    // after the request copied it (bindings, options) or after its result was read (event,
    // queue); `rk` lives as long as `admin`.
    unsafe {
        let native: Vec<*mut rd::rd_kafka_AclBinding_t> = bindings
            .iter()
            .zip(&names)
            .map(|((resource, operation), name)| {
                let make = if delete {
                    rd::rd_kafka_AclBindingFilter_new
                } else {
                    rd::rd_kafka_AclBinding_new
                };
                make(
                    native_resource(resource).0,
                    name.as_ptr(),
                    rd::rd_kafka_ResourcePatternType_t::RD_KAFKA_RESOURCE_PATTERN_LITERAL,
                    principal.as_ptr(),
                    host.as_ptr(),
                    native_operation(*operation),
                    rd::rd_kafka_AclPermissionType_t::RD_KAFKA_ACL_PERMISSION_TYPE_ALLOW,
                    errstr.as_mut_ptr(),
                    errstr.len(),
                )
            })
            .collect();
        anyhow::ensure!(native.iter().all(|b| !b.is_null()), "invalid ACL binding");
        let queue = rd::rd_kafka_queue_new(rk);
        let op = if delete {
            rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DELETEACLS
        } else {
            rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_CREATEACLS
        };
        let options = rd::rd_kafka_AdminOptions_new(rk, op);
        rd::rd_kafka_AdminOptions_set_request_timeout(
            options,
            timeout_ms,
            errstr.as_mut_ptr(),
            errstr.len(),
        );
        let mut array = native.clone();
        if delete {
            rd::rd_kafka_DeleteAcls(rk, array.as_mut_ptr(), array.len(), options, queue);
        } else {
            rd::rd_kafka_CreateAcls(rk, array.as_mut_ptr(), array.len(), options, queue);
        }
        for b in native {
            rd::rd_kafka_AclBinding_destroy(b);
        }
        rd::rd_kafka_AdminOptions_destroy(options);
        let event = rd::rd_kafka_queue_poll(queue, timeout_ms.saturating_add(5_000));
        let outcome = if event.is_null() {
            Err(anyhow::anyhow!("no answer to the ACL request"))
        } else {
            let err = rd::rd_kafka_event_error(event);
            let result = if err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                Ok(())
            } else {
                Err(anyhow::anyhow!(
                    "ACL request failed: {}",
                    std::ffi::CStr::from_ptr(rd::rd_kafka_event_error_string(event))
                        .to_string_lossy()
                ))
            };
            let result = result.and_then(|()| {
                if delete {
                    return Ok(());
                }
                let created = rd::rd_kafka_event_CreateAcls_result(event);
                anyhow::ensure!(!created.is_null(), "unexpected answer to CreateAcls");
                let mut n = 0;
                let results = rd::rd_kafka_CreateAcls_result_acls(created, &mut n);
                for i in 0..n {
                    let error = rd::rd_kafka_acl_result_error(*results.add(i));
                    if !error.is_null()
                        && rd::rd_kafka_error_code(error)
                            != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
                    {
                        anyhow::bail!(
                            "ACL not created: {}",
                            std::ffi::CStr::from_ptr(rd::rd_kafka_error_string(error))
                                .to_string_lossy()
                        );
                    }
                }
                Ok(())
            });
            rd::rd_kafka_event_destroy(event);
            result
        };
        rd::rd_kafka_queue_destroy(queue);
        outcome
    }
}
