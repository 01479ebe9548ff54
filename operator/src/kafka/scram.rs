//! SCRAM credentials through librdkafka's AlterUserScramCredentials and
//! DescribeUserScramCredentials, which rdkafka does not wrap. Ferry's principals authenticate
//! with SCRAM-SHA-512; the broker stores only the salted keys, never the password.

use std::{
    ffi::{CString, c_char},
    ptr,
    sync::Arc,
    time::Duration,
};

use rdkafka::{
    admin::AdminClient, bindings as rd, client::DefaultClientContext, error::RDKafkaErrorCode,
};

use super::{
    Error, Result,
    acls::item_error,
    native::{call, string},
};

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

/// Which of `users` have a SCRAM credential.
pub(super) async fn users_with_credentials(
    admin: &Admin,
    users: &[String],
    timeout: Duration,
) -> Result<Vec<String>> {
    if users.is_empty() {
        return Ok(Vec::new());
    }
    let names = users
        .iter()
        .map(|u| c_user(u))
        .collect::<Result<Vec<_>>>()?;
    call(
        admin,
        rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBEUSERSCRAMCREDENTIALS,
        timeout,
        move |rk, options, queue| {
            let mut pointers: Vec<*const c_char> = names.iter().map(|n| n.as_ptr()).collect();
            // SAFETY: the names are copied by the request during the call.
            unsafe {
                rd::rd_kafka_DescribeUserScramCredentials(rk, pointers.as_mut_ptr(), pointers.len(), options, queue)
            }
        },
        |event| {
            let mut found = Vec::new();
            // SAFETY: the event is a DescribeUserScramCredentials result; strings are copied.
            unsafe {
                let result = rd::rd_kafka_event_DescribeUserScramCredentials_result(event);
                if result.is_null() {
                    return Err(Error::UnexpectedEvent);
                }
                let mut n = 0;
                let descriptions = rd::rd_kafka_DescribeUserScramCredentials_result_descriptions(result, &mut n);
                for i in 0..n {
                    let d = *descriptions.add(i);
                    match item_error(rd::rd_kafka_UserScramCredentialsDescription_error(d)) {
                        Ok(()) if rd::rd_kafka_UserScramCredentialsDescription_scramcredentialinfo_count(d) > 0 => {
                            found.push(string(rd::rd_kafka_UserScramCredentialsDescription_user(d)));
                        }
                        Ok(()) | Err(Error::Request { code: RDKafkaErrorCode::ResourceNotFound, .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            Ok(found)
        },
    )
    .await
}
