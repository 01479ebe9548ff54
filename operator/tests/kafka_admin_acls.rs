//! The ACL and SCRAM wrappers against the real broker (authorizer on): what they create is
//! really enforced, what they delete is really gone.

use std::{sync::Arc, time::Duration};

use ferry_operator::kafka::{
    acls::{self, AclBinding, Operation, ResourceType},
    scram,
};
use ferry_testkit::{TempTopic, TestEnv, require_env, unique_name};
use rdkafka::{
    admin::AdminClient,
    client::DefaultClientContext,
    error::{KafkaError, RDKafkaErrorCode},
    producer::{FutureProducer, FutureRecord},
};

/// Kafka applies ACL and credential changes through its metadata log, a moment after the
/// admin call returns; checks retry until this deadline.
const PROPAGATION: Duration = Duration::from_secs(20);

fn admin(env: &TestEnv) -> Arc<AdminClient<DefaultClientContext>> {
    Arc::new(env.kafka_config().create().expect("admin client"))
}

async fn produce_as(
    env: &TestEnv,
    user: &str,
    password: &str,
    topic: &str,
) -> Result<(), KafkaError> {
    let producer: FutureProducer = env
        .kafka_args_as(user, password)
        .client_config()
        .expect("complete settings")
        .set("message.timeout.ms", "5000")
        .create()
        .expect("producer");
    producer
        .send(
            FutureRecord::to(topic).key("k").payload("v"),
            Duration::from_secs(6),
        )
        .await
        .map(|_| ())
        .map_err(|(e, _)| e)
}

fn denied(r: &Result<(), KafkaError>) -> bool {
    matches!(
        r,
        Err(KafkaError::MessageProduction(
            RDKafkaErrorCode::TopicAuthorizationFailed
        ))
    )
}

/// Retries `check` until it holds or the propagation deadline passes.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PROPAGATION;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} did not happen within {PROPAGATION:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn acls_created_are_enforced_and_deleted_ones_are_gone() {
    let env = require_env!();
    let admin = admin(env);
    let topic = TempTopic::create(env, 1).await.expect("topic");
    let user = format!("{}.svc", unique_name("ns"));
    let principal = format!("User:{user}");
    scram::upsert_scram_credential(admin.clone(), user.clone(), "pw-1".into())
        .await
        .expect("credential");

    // Authenticated, but no ACL: the authorizer refuses.
    eventually("authentication with the new credential", || async {
        denied(&produce_as(env, &user, "pw-1", topic.name()).await)
    })
    .await;

    let grants = vec![
        AclBinding::allow(
            &principal,
            ResourceType::Topic,
            topic.name(),
            Operation::Write,
        ),
        AclBinding::allow(
            &principal,
            ResourceType::Topic,
            topic.name(),
            Operation::Describe,
        ),
    ];
    acls::create_acls(admin.clone(), grants.clone())
        .await
        .expect("create ACLs");
    eventually("the WRITE ACL taking effect", || async {
        produce_as(env, &user, "pw-1", topic.name()).await.is_ok()
    })
    .await;

    let mut described = acls::describe_acls(admin.clone(), Some(principal.clone()))
        .await
        .expect("describe");
    described.sort();
    let mut expected = grants.clone();
    expected.sort();
    assert_eq!(
        described, expected,
        "describe returns exactly what was created"
    );

    let deleted = acls::delete_acls(admin.clone(), grants)
        .await
        .expect("delete");
    assert_eq!(deleted, 2);
    eventually("the WRITE ACL being revoked", || async {
        denied(&produce_as(env, &user, "pw-1", topic.name()).await)
    })
    .await;
    assert!(
        acls::describe_acls(admin.clone(), Some(principal))
            .await
            .expect("describe")
            .is_empty()
    );

    scram::delete_scram_credential(admin, user)
        .await
        .expect("clean up credential");
}

#[tokio::test]
async fn scram_rotation_replaces_the_password_and_deletion_locks_the_user_out() {
    let env = require_env!();
    let admin = admin(env);
    let topic = TempTopic::create(env, 1).await.expect("topic");
    let user = format!("{}.svc", unique_name("ns"));
    let principal = format!("User:{user}");
    acls::create_acls(
        admin.clone(),
        vec![AclBinding::allow(
            &principal,
            ResourceType::Topic,
            topic.name(),
            Operation::Write,
        )],
    )
    .await
    .expect("ACL");

    assert!(
        scram::scram_users(admin.clone(), vec![user.clone()])
            .await
            .expect("describe")
            .is_empty()
    );
    scram::upsert_scram_credential(admin.clone(), user.clone(), "old-password".into())
        .await
        .expect("create");
    assert_eq!(
        scram::scram_users(admin.clone(), vec![user.clone()])
            .await
            .expect("describe"),
        vec![user.clone()]
    );
    eventually("the old password working", || async {
        produce_as(env, &user, "old-password", topic.name())
            .await
            .is_ok()
    })
    .await;

    scram::upsert_scram_credential(admin.clone(), user.clone(), "new-password".into())
        .await
        .expect("rotate");
    eventually("the new password working", || async {
        produce_as(env, &user, "new-password", topic.name())
            .await
            .is_ok()
    })
    .await;
    let old = produce_as(env, &user, "old-password", topic.name()).await;
    assert!(
        old.is_err() && !denied(&old),
        "the old password no longer authenticates: {old:?}"
    );

    scram::delete_scram_credential(admin.clone(), user.clone())
        .await
        .expect("delete");
    // Deleting again is not an error.
    scram::delete_scram_credential(admin.clone(), user.clone())
        .await
        .expect("idempotent delete");
    eventually("the deleted user being locked out", || async {
        produce_as(env, &user, "new-password", topic.name())
            .await
            .is_err()
    })
    .await;
    assert!(
        scram::scram_users(admin.clone(), vec![user])
            .await
            .expect("describe")
            .is_empty()
    );
    acls::delete_acls(
        admin,
        vec![AclBinding::allow(
            &principal,
            ResourceType::Topic,
            topic.name(),
            Operation::Write,
        )],
    )
    .await
    .expect("clean up ACL");
}
