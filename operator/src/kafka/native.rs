//! The one place that drives librdkafka's admin C API directly, for the requests rdkafka has no
//! safe wrapper for (ACLs, SCRAM credentials, incremental config changes).
//!
//! Every request has the same shape: make `AdminOptions` for the operation, call the request
//! function with a private result queue, wait for the one result event, read it, destroy
//! everything. [`run`] owns that shape so the callers only fill in the request and read the
//! result; all pointers stay inside one blocking call and never escape it.

use std::{
    ffi::{CStr, CString, c_char},
    ptr::NonNull,
    time::Duration,
};

use rdkafka::{
    admin::AdminClient, bindings as rd, client::DefaultClientContext, error::RDKafkaErrorCode,
};

/// Why a native admin request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NativeError {
    #[error("{what}: {code} ({message})")]
    Kafka {
        what: &'static str,
        code: RDKafkaErrorCode,
        message: String,
    },
    #[error("{what}: no answer from Kafka within {timeout:?}")]
    Timeout {
        what: &'static str,
        timeout: Duration,
    },
    #[error("{what}: {message}")]
    Invalid { what: &'static str, message: String },
}

/// A result event of one admin request, destroyed when dropped.
pub(crate) struct Event(NonNull<rd::rd_kafka_event_t>);

impl Event {
    pub(crate) fn as_ptr(&self) -> *mut rd::rd_kafka_event_t {
        self.0.as_ptr()
    }
}

impl Drop for Event {
    fn drop(&mut self) {
        // SAFETY: the event came from rd_kafka_queue_poll and is destroyed exactly once.
        unsafe { rd::rd_kafka_event_destroy(self.0.as_ptr()) }
    }
}

/// Admin options for one operation, destroyed when dropped.
struct Options(NonNull<rd::rd_kafka_AdminOptions_t>);

impl Drop for Options {
    fn drop(&mut self) {
        // SAFETY: created by rd_kafka_AdminOptions_new, destroyed exactly once.
        unsafe { rd::rd_kafka_AdminOptions_destroy(self.0.as_ptr()) }
    }
}

/// A private result queue, destroyed when dropped.
struct Queue(NonNull<rd::rd_kafka_queue_t>);

impl Drop for Queue {
    fn drop(&mut self) {
        // SAFETY: created by rd_kafka_queue_new, destroyed exactly once.
        unsafe { rd::rd_kafka_queue_destroy(self.0.as_ptr()) }
    }
}

/// Runs one admin request and returns its result event, after checking the event's
/// request-level error. Blocks the calling thread: call it from `spawn_blocking`.
///
/// # Safety
/// `request` must issue exactly one admin request of kind `op` on the given handle, options and
/// queue, and must not keep any of the pointers.
pub(crate) unsafe fn run(
    admin: &AdminClient<DefaultClientContext>,
    what: &'static str,
    op: rd::rd_kafka_admin_op_t,
    timeout: Duration,
    request: impl FnOnce(
        *mut rd::rd_kafka_t,
        *mut rd::rd_kafka_AdminOptions_t,
        *mut rd::rd_kafka_queue_t,
    ),
) -> Result<Event, NativeError> {
    let rk = admin.inner().native_ptr();
    let timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: rk is the live handle of `admin`, which outlives this call.
    let queue = NonNull::new(unsafe { rd::rd_kafka_queue_new(rk) })
        .map(Queue)
        .ok_or(NativeError::Invalid {
            what,
            message: "cannot create a result queue".into(),
        })?;
    // SAFETY: as above; `op` is a valid operation kind.
    let options = NonNull::new(unsafe { rd::rd_kafka_AdminOptions_new(rk, op) })
        .map(Options)
        .ok_or(NativeError::Invalid {
            what,
            message: "cannot create admin options".into(),
        })?;
    let mut errstr = [0 as c_char; 512];
    // SAFETY: options is valid; errstr is a writable buffer of the given size.
    let err = unsafe {
        rd::rd_kafka_AdminOptions_set_request_timeout(
            options.0.as_ptr(),
            timeout_ms,
            errstr.as_mut_ptr(),
            errstr.len(),
        )
    };
    if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        return Err(NativeError::Invalid {
            what,
            message: c_text(errstr.as_ptr()),
        });
    }
    request(rk, options.0.as_ptr(), queue.0.as_ptr());
    // Wait a little longer than the request timeout, so librdkafka reports its own time-out.
    let wait_ms = timeout_ms.saturating_add(5_000);
    // SAFETY: the queue is valid until `queue` is dropped at the end of this function.
    let event = NonNull::new(unsafe { rd::rd_kafka_queue_poll(queue.0.as_ptr(), wait_ms) })
        .map(Event)
        .ok_or(NativeError::Timeout { what, timeout })?;
    // SAFETY: event is a valid event.
    let code = unsafe { rd::rd_kafka_event_error(event.as_ptr()) };
    if code != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        // SAFETY: as above; the string lives as long as the event.
        let message = c_text(unsafe { rd::rd_kafka_event_error_string(event.as_ptr()) });
        return Err(NativeError::Kafka {
            what,
            code: code.into(),
            message,
        });
    }
    Ok(event)
}

/// The error of a per-item result (`rd_kafka_error_t`), if any.
///
/// # Safety
/// `error` is null or a valid error owned by a live result event.
pub(crate) unsafe fn item_error(
    what: &'static str,
    error: *const rd::rd_kafka_error_t,
) -> Result<(), NativeError> {
    if error.is_null() {
        return Ok(());
    }
    // SAFETY: non-null and valid per the contract.
    let (code, message) = unsafe {
        (
            rd::rd_kafka_error_code(error),
            c_text(rd::rd_kafka_error_string(error)),
        )
    };
    if code == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        return Ok(());
    }
    Err(NativeError::Kafka {
        what,
        code: code.into(),
        message,
    })
}

/// A C string for librdkafka; refuses interior NULs (which no Kafka name may contain).
pub(crate) fn c_string(what: &'static str, s: &str) -> Result<CString, NativeError> {
    CString::new(s).map_err(|_| NativeError::Invalid {
        what,
        message: format!("{s:?} contains a NUL byte"),
    })
}

/// Copies a C string owned by librdkafka (null reads as empty).
pub(crate) fn c_text(s: *const c_char) -> String {
    if s.is_null() {
        return String::new();
    }
    // SAFETY: librdkafka returns NUL-terminated strings that live as long as their owner,
    // which outlives this copy.
    unsafe { CStr::from_ptr(s) }.to_string_lossy().into_owned()
}

/// Runs a blocking admin request off the async runtime.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, NativeError> + Send + 'static,
) -> Result<T, NativeError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(NativeError::Invalid {
            what: "admin request",
            message: format!("task failed: {e}"),
        })
    })
}
