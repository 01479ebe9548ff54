//! The admin calls rdkafka's safe API lacks, made through librdkafka's C API: incremental
//! config changes (`rd_kafka_IncrementalAlterConfigs`, KIP-339) and topic descriptions with
//! topic ids (`rd_kafka_DescribeTopics`, KIP-516). All `unsafe` of the operator is here and in
//! its two siblings for ACLs (`acls.rs`) and SCRAM credentials (`scram.rs`), which use [`call`].
//!
//! Each call gets a queue of its own (`rd_kafka_queue_new`), so concurrent calls never see each
//! other's result events; the result is awaited on a blocking thread and copied into owned Rust
//! values before the event is destroyed.

use std::{
    ffi::{CStr, CString, c_char},
    ptr,
    sync::Arc,
    time::Duration,
};

use rdkafka::{
    admin::AdminClient,
    bindings as rd,
    client::DefaultClientContext,
    types::{RDKafkaErrorCode, RDKafkaRespErr},
};

use super::{ConfigOp, Error, Result};

/// A librdkafka object that is destroyed when dropped.
pub(super) struct Owned<T> {
    pub(super) ptr: *mut T,
    pub(super) destroy: unsafe extern "C" fn(*mut T),
}

impl<T> Drop for Owned<T> {
    fn drop(&mut self) {
        if !self.ptr.is_null() {
            // SAFETY: `ptr` came from the matching librdkafka constructor and is destroyed once.
            unsafe { (self.destroy)(self.ptr) }
        }
    }
}

// SAFETY: librdkafka's queues, options and events may be used from any thread (librdkafka is
// thread-safe); we never share one between threads at the same time.
unsafe impl<T> Send for Owned<T> {}

/// Copies a C string librdkafka owns into a Rust string (empty for null).
///
/// # Safety
/// `s` is null or a valid NUL-terminated string that lives for the duration of the call.
pub(super) unsafe fn string(s: *const c_char) -> String {
    if s.is_null() {
        String::new()
    } else {
        // SAFETY: guaranteed by the caller.
        unsafe { CStr::from_ptr(s) }.to_string_lossy().into_owned()
    }
}

pub(super) fn code(err: RDKafkaRespErr) -> RDKafkaErrorCode {
    RDKafkaErrorCode::from(err)
}

/// A fresh result queue and admin options for operation `op` with request timeout
/// `timeout_ms`: what every admin request of this module and its siblings starts with.
///
/// # Safety
/// `rk` is a live client that outlives both returned objects.
pub(super) unsafe fn queue_and_options(
    rk: *mut rd::rd_kafka_t,
    op: rd::rd_kafka_admin_op_t,
    timeout_ms: i32,
) -> (
    Owned<rd::rd_kafka_queue_t>,
    Owned<rd::rd_kafka_AdminOptions_t>,
) {
    // SAFETY: `rk` is live (the caller's promise); the queue is destroyed by its guard.
    let queue = Owned {
        ptr: unsafe { rd::rd_kafka_queue_new(rk) },
        destroy: rd::rd_kafka_queue_destroy,
    };
    // SAFETY: as above.
    (queue, unsafe { options(rk, op, timeout_ms) })
}

/// Admin options for operation `op` with request timeout `timeout_ms`.
///
/// # Safety
/// `rk` is a live client that outlives the returned object.
pub(super) unsafe fn options(
    rk: *mut rd::rd_kafka_t,
    op: rd::rd_kafka_admin_op_t,
    timeout_ms: i32,
) -> Owned<rd::rd_kafka_AdminOptions_t> {
    // SAFETY: `rk` is live (the caller's promise); the options are destroyed by their guard.
    let options = Owned {
        ptr: unsafe { rd::rd_kafka_AdminOptions_new(rk, op) },
        destroy: rd::rd_kafka_AdminOptions_destroy,
    };
    let mut errstr = [0 as c_char; 512];
    // SAFETY: options is valid; errstr is a writable buffer of the given size.
    unsafe {
        rd::rd_kafka_AdminOptions_set_request_timeout(
            options.ptr,
            timeout_ms,
            errstr.as_mut_ptr(),
            errstr.len(),
        );
    }
    options
}

/// Runs one admin operation: `start` is given the client, options and a fresh queue and must
/// start the request; `read` turns the result event into owned values.
pub(super) async fn call<T: Send + 'static>(
    admin: &Arc<AdminClient<DefaultClientContext>>,
    op: rd::rd_kafka_admin_op_t,
    timeout: Duration,
    start: impl FnOnce(
        *mut rd::rd_kafka_t,
        *const rd::rd_kafka_AdminOptions_t,
        *mut rd::rd_kafka_queue_t,
    ) + Send
    + 'static,
    read: impl FnOnce(*mut rd::rd_kafka_event_t) -> Result<T> + Send + 'static,
) -> Result<T> {
    let admin = Arc::clone(admin);
    let timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    tokio::task::spawn_blocking(move || {
        let rk = admin.inner().native_ptr();
        // SAFETY: `rk` is a live client (we hold `admin`); queue and options are destroyed by
        // their guards after the result event, which they outlive.
        let (queue, options) = unsafe { queue_and_options(rk, op, timeout_ms) };
        start(rk, options.ptr, queue.ptr);
        // Wait a little longer than the request timeout: librdkafka reports the timeout itself.
        // SAFETY: the queue is valid; a returned event is owned by us.
        let event = Owned {
            ptr: unsafe { rd::rd_kafka_queue_poll(queue.ptr, timeout_ms.saturating_add(5_000)) },
            destroy: rd::rd_kafka_event_destroy,
        };
        if event.ptr.is_null() {
            return Err(Error::Timeout);
        }
        // SAFETY: event is a valid result event.
        let err = unsafe { rd::rd_kafka_event_error(event.ptr) };
        if err != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR {
            // SAFETY: as above; the string lives as long as the event.
            let message = unsafe { string(rd::rd_kafka_event_error_string(event.ptr)) };
            return Err(Error::Request {
                code: code(err),
                message,
            });
        }
        read(event.ptr)
    })
    .await
    .map_err(|e| Error::Request {
        code: RDKafkaErrorCode::Fail,
        message: format!("admin call thread failed: {e}"),
    })?
}

/// What `rd_kafka_DescribeTopics` says about one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Described {
    pub name: String,
    pub result: std::result::Result<(String, i32, i32), (RDKafkaErrorCode, String)>,
}

/// Describes `topics`: (topic id, partitions, replication factor) or the per-topic error.
pub(super) async fn describe_topics(
    admin: &Arc<AdminClient<DefaultClientContext>>,
    topics: &[String],
    timeout: Duration,
) -> Result<Vec<Described>> {
    let names = topics
        .iter()
        .map(|t| CString::new(t.as_str()).map_err(|_| Error::BadName(t.clone())))
        .collect::<Result<Vec<_>>>()?;
    call(
        admin,
        rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBETOPICS,
        timeout,
        move |rk, options, queue| {
            let mut pointers: Vec<*const c_char> = names.iter().map(|n| n.as_ptr()).collect();
            // SAFETY: the collection copies the names; it is destroyed after the call, which
            // copies it again into the request.
            let collection = Owned {
                ptr: unsafe {
                    rd::rd_kafka_TopicCollection_of_topic_names(
                        pointers.as_mut_ptr(),
                        pointers.len(),
                    )
                },
                destroy: rd::rd_kafka_TopicCollection_destroy,
            };
            // SAFETY: all pointers are valid for the duration of the call.
            unsafe { rd::rd_kafka_DescribeTopics(rk, collection.ptr, options, queue) };
        },
        |event| {
            // SAFETY: the event is a DescribeTopics result; everything read from it is copied
            // before it is destroyed.
            unsafe {
                let result = rd::rd_kafka_event_DescribeTopics_result(event);
                if result.is_null() {
                    return Err(Error::UnexpectedEvent);
                }
                let mut count = 0;
                let descriptions = rd::rd_kafka_DescribeTopics_result_topics(result, &mut count);
                let mut out = Vec::with_capacity(count);
                for i in 0..count {
                    let desc = *descriptions.add(i);
                    let name = string(rd::rd_kafka_TopicDescription_name(desc));
                    let error = rd::rd_kafka_TopicDescription_error(desc);
                    let error_code = if error.is_null() {
                        RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR
                    } else {
                        rd::rd_kafka_error_code(error)
                    };
                    if error_code != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR {
                        let message = string(rd::rd_kafka_error_string(error));
                        out.push(Described {
                            name,
                            result: Err((code(error_code), message)),
                        });
                        continue;
                    }
                    let id = string(rd::rd_kafka_Uuid_base64str(
                        rd::rd_kafka_TopicDescription_topic_id(desc),
                    ));
                    let mut partitions = 0;
                    let infos = rd::rd_kafka_TopicDescription_partitions(desc, &mut partitions);
                    let mut replicas = 0;
                    if partitions > 0 {
                        rd::rd_kafka_TopicPartitionInfo_replicas(*infos, &mut replicas);
                    }
                    out.push(Described {
                        name,
                        result: Ok((
                            id,
                            i32::try_from(partitions).unwrap_or(i32::MAX),
                            i32::try_from(replicas).unwrap_or(i32::MAX),
                        )),
                    });
                }
                Ok(out)
            }
        },
    )
    .await
}

/// Applies incremental config changes to topics; per topic, `Ok` or Kafka's refusal.
pub(super) async fn incremental_alter_topic_configs(
    admin: &Arc<AdminClient<DefaultClientContext>>,
    changes: &[(String, Vec<ConfigOp>)],
    timeout: Duration,
) -> Result<Vec<(String, std::result::Result<(), (RDKafkaErrorCode, String)>)>> {
    type CChanges = Vec<(
        CString,
        Vec<(CString, rd::rd_kafka_AlterConfigOpType_t, Option<CString>)>,
    )>;
    let mut native: CChanges = Vec::with_capacity(changes.len());
    for (topic, ops) in changes {
        let name = CString::new(topic.as_str()).map_err(|_| Error::BadName(topic.clone()))?;
        let mut native_ops = Vec::with_capacity(ops.len());
        for op in ops {
            let (key, kind, value) = match op {
                ConfigOp::Set { key, value } => (
                    key,
                    rd::rd_kafka_AlterConfigOpType_t::RD_KAFKA_ALTER_CONFIG_OP_TYPE_SET,
                    Some(value),
                ),
                ConfigOp::Delete { key } => (
                    key,
                    rd::rd_kafka_AlterConfigOpType_t::RD_KAFKA_ALTER_CONFIG_OP_TYPE_DELETE,
                    None,
                ),
            };
            let key = CString::new(key.as_str()).map_err(|_| Error::BadName(key.clone()))?;
            let value = value
                .map(|v| CString::new(v.as_str()).map_err(|_| Error::BadName(v.clone())))
                .transpose()?;
            native_ops.push((key, kind, value));
        }
        native.push((name, native_ops));
    }
    call(
        admin,
        rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_INCREMENTALALTERCONFIGS,
        timeout,
        move |rk, options, queue| {
            // SAFETY: resources are created, filled (librdkafka copies the strings), handed to
            // the request (which copies them) and destroyed afterwards.
            unsafe {
                let mut resources: Vec<*mut rd::rd_kafka_ConfigResource_t> = native
                    .iter()
                    .map(|(name, ops)| {
                        let resource = rd::rd_kafka_ConfigResource_new(
                            rd::rd_kafka_ResourceType_t::RD_KAFKA_RESOURCE_TOPIC,
                            name.as_ptr(),
                        );
                        for (key, kind, value) in ops {
                            let value = value.as_ref().map_or(ptr::null(), |v| v.as_ptr());
                            let error = rd::rd_kafka_ConfigResource_add_incremental_config(
                                resource,
                                key.as_ptr(),
                                *kind,
                                value,
                            );
                            // Only invalid arguments fail here (a null name); ours are not.
                            if !error.is_null() {
                                rd::rd_kafka_error_destroy(error);
                            }
                        }
                        resource
                    })
                    .collect();
                rd::rd_kafka_IncrementalAlterConfigs(
                    rk,
                    resources.as_mut_ptr(),
                    resources.len(),
                    options,
                    queue,
                );
                rd::rd_kafka_ConfigResource_destroy_array(resources.as_mut_ptr(), resources.len());
            }
        },
        |event| {
            // SAFETY: the event is an IncrementalAlterConfigs result; strings are copied.
            unsafe {
                let result = rd::rd_kafka_event_IncrementalAlterConfigs_result(event);
                if result.is_null() {
                    return Err(Error::UnexpectedEvent);
                }
                let mut count = 0;
                let resources =
                    rd::rd_kafka_IncrementalAlterConfigs_result_resources(result, &mut count);
                let mut out = Vec::with_capacity(count);
                for i in 0..count {
                    let resource = *resources.add(i);
                    let name = string(rd::rd_kafka_ConfigResource_name(resource));
                    let err = rd::rd_kafka_ConfigResource_error(resource);
                    let outcome = if err == RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR {
                        Ok(())
                    } else {
                        Err((
                            code(err),
                            string(rd::rd_kafka_ConfigResource_error_string(resource)),
                        ))
                    };
                    out.push((name, outcome));
                }
                Ok(out)
            }
        },
    )
    .await
}
