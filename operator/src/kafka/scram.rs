//! SCRAM credentials through librdkafka's AlterUserScramCredentials and
//! DescribeUserScramCredentials, which rdkafka does not wrap. Ferry's principals authenticate
//! with SCRAM-SHA-512; the broker stores only the salted keys, never the password.
//!
//! DescribeUserScramCredentials is deliberately not wrapped: librdkafka 2.12.1 stores a
//! request-level error string that is static or on the stack into the result op, and frees it
//! when the event is destroyed (`rd_kafka_DescribeUserScramCredentialsResponse_parse`), so any
//! refused describe (for example an admin without cluster rights) aborts the process with
//! `munmap_chunk(): invalid pointer`. Callers re-assert credentials instead of describing them.

use std::{ffi::CString, ptr, sync::Arc, time::Duration};

use rdkafka::{
    admin::AdminClient, bindings as rd, client::DefaultClientContext, error::RDKafkaErrorCode,
};

use super::{Error, Result, acls::item_error, native::call};

/// PBKDF2 iterations for SCRAM-SHA-512: Kafka's minimum (and its tools' default) is 4096.
pub const SCRAM_ITERATIONS: i32 = 4096;

const SHA_512: rd::rd_kafka_ScramMechanism_t =
    rd::rd_kafka_ScramMechanism_t::RD_KAFKA_SCRAM_MECHANISM_SHA_512;

type Admin = Arc<AdminClient<DefaultClientContext>>;

/// One change to a user's credential.
enum Alteration {
    Upsert { user: CString, password: String },
    Delete { user: CString },
}

fn c_user(user: &str) -> Result<CString> {
    CString::new(user).map_err(|_| Error::BadName(user.to_owned()))
}

async fn alter(admin: &Admin, alteration: Alteration, timeout: Duration) -> Result<()> {
    call(
        admin,
        rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_ALTERUSERSCRAMCREDENTIALS,
        timeout,
        move |rk, options, queue| {
            // SAFETY: the alteration copies the strings; it is destroyed after the request
            // copied it. A null salt asks librdkafka for a random one.
            unsafe {
                let mut native = [match &alteration {
                    Alteration::Upsert { user, password } => {
                        rd::rd_kafka_UserScramCredentialUpsertion_new(
                            user.as_ptr(),
                            SHA_512,
                            SCRAM_ITERATIONS,
                            password.as_ptr(),
                            password.len(),
                            ptr::null(),
                            0,
                        )
                    }
                    Alteration::Delete { user } => {
                        rd::rd_kafka_UserScramCredentialDeletion_new(user.as_ptr(), SHA_512)
                    }
                }];
                rd::rd_kafka_AlterUserScramCredentials(rk, native.as_mut_ptr(), 1, options, queue);
                rd::rd_kafka_UserScramCredentialAlteration_destroy(native[0]);
            }
        },
        |event| {
            // SAFETY: the event is an AlterUserScramCredentials result; responses live with it.
            unsafe {
                let result = rd::rd_kafka_event_AlterUserScramCredentials_result(event);
                if result.is_null() {
                    return Err(Error::UnexpectedEvent);
                }
                let mut n = 0;
                let responses =
                    rd::rd_kafka_AlterUserScramCredentials_result_responses(result, &mut n);
                for i in 0..n {
                    item_error(
                        rd::rd_kafka_AlterUserScramCredentials_result_response_error(
                            *responses.add(i),
                        ),
                    )?;
                }
            }
            Ok(())
        },
    )
    .await
}

/// Creates the user's SCRAM-SHA-512 credential, or replaces its password.
pub(super) async fn upsert(
    admin: &Admin,
    user: &str,
    password: &str,
    timeout: Duration,
) -> Result<()> {
    let alteration = Alteration::Upsert {
        user: c_user(user)?,
        password: password.to_owned(),
    };
    alter(admin, alteration, timeout).await
}

/// Deletes the user's SCRAM-SHA-512 credential; a user without one is not an error.
pub(super) async fn delete(admin: &Admin, user: &str, timeout: Duration) -> Result<()> {
    match alter(
        admin,
        Alteration::Delete {
            user: c_user(user)?,
        },
        timeout,
    )
    .await
    {
        Err(Error::Request {
            code: RDKafkaErrorCode::ResourceNotFound,
            ..
        }) => Ok(()),
        other => other,
    }
}
