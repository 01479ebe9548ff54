//! The ACL and SCRAM wrappers against the real broker (authorizer on): what they create is
//! really enforced, what they delete is really gone.

mod support;

use std::time::Duration;

use ferry_operator::kafka::{
    KafkaAdmin,
    acls::{AclBinding, Operation, ResourceType},
};
use ferry_testkit::{TempTopic, TestEnv, require_env, unique_name, wait_for};

/// Kafka applies ACL and credential changes through its metadata log, a moment after the
/// admin call returns; checks retry until this deadline.
const PROPAGATION: Duration = Duration::from_secs(20);

fn admin(env: &TestEnv) -> KafkaAdmin {
    KafkaAdmin::new(&env.kafka_config(), Duration::from_secs(30)).expect("admin client")
}

#[tokio::test]
async fn acls_created_are_enforced_and_deleted_ones_are_gone() {
    let env = require_env!();
    let admin = admin(env);
    let topic = TempTopic::create(env, 1).await.expect("topic");
    let user = format!("{}.svc", unique_name("ns"));
    let principal = format!("User:{user}");
    admin
        .upsert_scram_credential(&user, "pw-1")
        .await
        .expect("credential");

    // Authenticated, but no ACL: the authorizer refuses.
    wait_for(
        "authentication with the new credential",
        PROPAGATION,
        || async {
            support::write_denied(&support::produce_as(env, &user, "pw-1", topic.name()).await)
        },
    )
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
    admin
        .create_acls(&grants.clone())
        .await
        .expect("create ACLs");
    wait_for("the WRITE ACL taking effect", PROPAGATION, || async {
        support::produce_as(env, &user, "pw-1", topic.name())
            .await
            .is_ok()
    })
    .await;

    let mut described = admin
        .describe_acls(Some(&principal))
        .await
        .expect("describe");
    described.sort();
    let mut expected = grants.clone();
    expected.sort();
    assert_eq!(
        described, expected,
        "describe returns exactly what was created"
    );

    let deleted = admin.delete_acls(&grants).await.expect("delete");
    assert_eq!(deleted, 2);
    wait_for("the WRITE ACL being revoked", PROPAGATION, || async {
        support::write_denied(&support::produce_as(env, &user, "pw-1", topic.name()).await)
    })
    .await;
    assert!(
        admin
            .describe_acls(Some(&principal))
            .await
            .expect("describe")
            .is_empty()
    );

    admin
        .delete_scram_credential(&user)
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
    admin
        .create_acls(&[AclBinding::allow(
            &principal,
            ResourceType::Topic,
            topic.name(),
            Operation::Write,
        )])
        .await
        .expect("ACL");

    let unknown = support::produce_as(env, &user, "old-password", topic.name()).await;
    assert!(
        unknown.is_err() && !support::write_denied(&unknown),
        "a user without a credential does not authenticate: {unknown:?}"
    );
    admin
        .upsert_scram_credential(&user, "old-password")
        .await
        .expect("create");
    wait_for("the old password working", PROPAGATION, || async {
        support::produce_as(env, &user, "old-password", topic.name())
            .await
            .is_ok()
    })
    .await;

    admin
        .upsert_scram_credential(&user, "new-password")
        .await
        .expect("rotate");
    wait_for("the new password working", PROPAGATION, || async {
        support::produce_as(env, &user, "new-password", topic.name())
            .await
            .is_ok()
    })
    .await;
    let old = support::produce_as(env, &user, "old-password", topic.name()).await;
    assert!(
        old.is_err() && !support::write_denied(&old),
        "the old password no longer authenticates: {old:?}"
    );

    admin.delete_scram_credential(&user).await.expect("delete");
    // Deleting again is not an error.
    admin
        .delete_scram_credential(&user)
        .await
        .expect("idempotent delete");
    wait_for("the deleted user being locked out", PROPAGATION, || async {
        support::produce_as(env, &user, "new-password", topic.name())
            .await
            .is_err()
    })
    .await;
    admin
        .delete_acls(&[AclBinding::allow(
            &principal,
            ResourceType::Topic,
            topic.name(),
            Operation::Write,
        )])
        .await
        .expect("clean up ACL");
}
