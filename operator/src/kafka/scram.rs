//! SCRAM credentials through librdkafka's AlterUserScramCredentials and
//! DescribeUserScramCredentials, which rdkafka does not wrap. Ferry's principals authenticate
//! with SCRAM-SHA-512; the broker stores only the salted keys, never the password.

use std::{ptr, sync::Arc, time::Duration};

use rdkafka::{
    admin::AdminClient, bindings as rd, client::DefaultClientContext, error::RDKafkaErrorCode,
};

use super::native::{self, NativeError, blocking, c_string, c_text, item_error};

/// How long one credential request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// PBKDF2 iterations for SCRAM-SHA-512: Kafka's minimum (and its tools' default) is 4096.
pub const SCRAM_ITERATIONS: i32 = 4096;

type Admin = AdminClient<DefaultClientContext>;

/// Owned native alterations, destroyed when dropped.
struct Alterations(Vec<*mut rd::rd_kafka_UserScramCredentialAlteration_t>);

impl Drop for Alterations {
    fn drop(&mut self) {
        for a in self.0.drain(..) {
            // SAFETY: created by UserScramCredential{Upsertion,Deletion}_new, destroyed once.
            unsafe { rd::rd_kafka_UserScramCredentialAlteration_destroy(a) }
        }
    }
}

const SHA_512: rd::rd_kafka_ScramMechanism_t =
    rd::rd_kafka_ScramMechanism_t::RD_KAFKA_SCRAM_MECHANISM_SHA_512;

fn alter_blocking(admin: &Admin, alterations: Alterations) -> Result<(), NativeError> {
    let what = "changing SCRAM credentials";
    let mut alterations = alterations;
    // SAFETY: the alterations are read during the call only and outlive it.
    let event = unsafe {
        native::run(
            admin,
            what,
            rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_ALTERUSERSCRAMCREDENTIALS,
            REQUEST_TIMEOUT,
            |rk, opts, queue| {
                rd::rd_kafka_AlterUserScramCredentials(
                    rk,
                    alterations.0.as_mut_ptr(),
                    alterations.0.len(),
                    opts,
                    queue,
                )
            },
        )?
    };
    // SAFETY: the event is an AlterUserScramCredentials result; responses live with it.
    unsafe {
        let result = rd::rd_kafka_event_AlterUserScramCredentials_result(event.as_ptr());
        let mut n = 0;
        let responses = rd::rd_kafka_AlterUserScramCredentials_result_responses(result, &mut n);
        for i in 0..n {
            item_error(
                what,
                rd::rd_kafka_AlterUserScramCredentials_result_response_error(*responses.add(i)),
            )?;
        }
    }
    Ok(())
}

/// Creates the user's SCRAM-SHA-512 credential, or replaces its password. librdkafka salts it
/// with random bytes and sends only the salted keys.
pub async fn upsert_scram_credential(
    admin: Arc<Admin>,
    user: String,
    password: String,
) -> Result<(), NativeError> {
    blocking(move || {
        let name = c_string("changing SCRAM credentials", &user)?;
        // SAFETY: name and password are only read during the call; a null salt asks
        // librdkafka for a random one.
        let upsertion = unsafe {
            rd::rd_kafka_UserScramCredentialUpsertion_new(
                name.as_ptr(),
                SHA_512,
                SCRAM_ITERATIONS,
                password.as_ptr(),
                password.len(),
                ptr::null(),
                0,
            )
        };
        alter_blocking(&admin, Alterations(vec![upsertion]))
    })
    .await
}

/// Deletes the user's SCRAM-SHA-512 credential; a user that has none is not an error.
pub async fn delete_scram_credential(admin: Arc<Admin>, user: String) -> Result<(), NativeError> {
    blocking(move || {
        let name = c_string("deleting SCRAM credentials", &user)?;
        // SAFETY: name is only read during the call.
        let deletion =
            unsafe { rd::rd_kafka_UserScramCredentialDeletion_new(name.as_ptr(), SHA_512) };
        match alter_blocking(&admin, Alterations(vec![deletion])) {
            Err(NativeError::Kafka {
                code: RDKafkaErrorCode::ResourceNotFound,
                ..
            }) => Ok(()),
            other => other,
        }
    })
    .await
}

/// Which of `users` have a SCRAM credential.
pub async fn scram_users(
    admin: Arc<Admin>,
    users: Vec<String>,
) -> Result<Vec<String>, NativeError> {
    blocking(move || {
        let what = "describing SCRAM credentials";
        let names = users
            .iter()
            .map(|u| c_string(what, u))
            .collect::<Result<Vec<_>, _>>()?;
        let mut pointers: Vec<*const std::ffi::c_char> = names.iter().map(|n| n.as_ptr()).collect();
        // SAFETY: the names are read during the call only.
        let event = unsafe {
            native::run(
                &admin,
                what,
                rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBEUSERSCRAMCREDENTIALS,
                REQUEST_TIMEOUT,
                |rk, opts, queue| {
                    rd::rd_kafka_DescribeUserScramCredentials(
                        rk,
                        pointers.as_mut_ptr(),
                        pointers.len(),
                        opts,
                        queue,
                    )
                },
            )?
        };
        let mut found = Vec::new();
        // SAFETY: the event is a DescribeUserScramCredentials result; descriptions live with it.
        unsafe {
            let result = rd::rd_kafka_event_DescribeUserScramCredentials_result(event.as_ptr());
            let mut n = 0;
            let descriptions =
                rd::rd_kafka_DescribeUserScramCredentials_result_descriptions(result, &mut n);
            for i in 0..n {
                let d = *descriptions.add(i);
                match item_error(what, rd::rd_kafka_UserScramCredentialsDescription_error(d)) {
                    Ok(()) => {
                        if rd::rd_kafka_UserScramCredentialsDescription_scramcredentialinfo_count(d)
                            > 0
                        {
                            found
                                .push(c_text(rd::rd_kafka_UserScramCredentialsDescription_user(d)));
                        }
                    }
                    Err(NativeError::Kafka {
                        code: RDKafkaErrorCode::ResourceNotFound,
                        ..
                    }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(found)
    })
    .await
}
