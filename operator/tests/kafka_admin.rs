//! The Kafka admin layer against the real broker (SASL/SCRAM, authorizer on): incremental
//! config changes touch only the keys named, describe reports only per-topic overrides, and
//! batching answers every caller with its own topic.

use std::{collections::BTreeMap, time::Duration};

use ferry_operator::kafka::{Batched, ConfigOp, KafkaAdmin, NewTopicSpec};
use ferry_testkit::{require_env, unique_name};
use rdkafka::types::RDKafkaErrorCode;

fn admin(env: &ferry_testkit::TestEnv) -> KafkaAdmin {
    KafkaAdmin::new(&env.kafka_config(), Duration::from_secs(30)).expect("admin client")
}

/// Describes a topic, waiting out metadata propagation right after a create or change.
async fn describe(
    admin: &KafkaAdmin,
    name: &str,
    until: impl Fn(&ferry_operator::kafka::TopicState) -> bool,
) -> ferry_operator::kafka::TopicState {
    for _ in 0..100 {
        let described = admin
            .describe_topics(&[name.to_owned()])
            .await
            .expect("describe");
        if let Ok(Some(state)) = &described[0].1
            && until(state)
        {
            return state.clone();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{name} never reached the expected state");
}

fn config(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[tokio::test]
async fn incremental_alter_changes_only_named_keys() {
    let env = require_env!();
    let admin = admin(env);
    let name = unique_name("admin");
    let created = admin
        .create_topics(&[NewTopicSpec {
            name: name.clone(),
            partitions: 2,
            replication_factor: Some(1),
            config: config(&[("retention.ms", "600000"), ("cleanup.policy", "compact")]),
        }])
        .await
        .expect("request");
    assert_eq!(created, vec![(name.clone(), Ok(()))]);

    let state = describe(&admin, &name, |_| true).await;
    assert_eq!(state.partitions, 2);
    assert_eq!(state.replication_factor, 1);
    assert!(!state.topic_id.is_empty());
    // Only the overrides, not the broker defaults of every other config.
    assert_eq!(
        state.config,
        config(&[("retention.ms", "600000"), ("cleanup.policy", "compact")])
    );

    let altered = admin
        .alter_topic_configs(&[(
            name.clone(),
            vec![
                ConfigOp::Set {
                    key: "max.message.bytes".into(),
                    value: "2000000".into(),
                },
                ConfigOp::Delete {
                    key: "cleanup.policy".into(),
                },
            ],
        )])
        .await
        .expect("alter");
    assert_eq!(altered, vec![(name.clone(), Ok(()))]);
    let state = describe(&admin, &name, |s| {
        s.config.contains_key("max.message.bytes") && !s.config.contains_key("cleanup.policy")
    })
    .await;
    // retention.ms was not named, so it kept its value (a plain AlterConfigs would reset it).
    assert_eq!(
        state.config,
        config(&[("retention.ms", "600000"), ("max.message.bytes", "2000000")])
    );

    let refused = admin
        .alter_topic_configs(&[(
            name.clone(),
            vec![ConfigOp::Set {
                key: "retention.ms".into(),
                value: "soon".into(),
            }],
        )])
        .await
        .expect("alter request");
    let refusal = refused[0].1.clone().expect_err("a bad value is refused");
    assert_eq!(refusal.code, RDKafkaErrorCode::InvalidConfig);
    assert!(refusal.message.contains("retention.ms"), "{refusal}");

    let grown = admin
        .create_partitions(&[(name.clone(), 5)])
        .await
        .expect("grow");
    assert_eq!(grown, vec![(name.clone(), Ok(()))]);
    let state = describe(&admin, &name, |s| s.partitions == 5).await;
    assert_eq!(state.partitions, 5);

    assert_eq!(
        admin
            .delete_topics(std::slice::from_ref(&name))
            .await
            .expect("delete"),
        vec![(name.clone(), Ok(()))]
    );
    // Deleting again is not an error: the topic is gone, as asked.
    assert_eq!(
        admin
            .delete_topics(std::slice::from_ref(&name))
            .await
            .expect("delete"),
        vec![(name.clone(), Ok(()))]
    );
}

#[tokio::test]
async fn missing_topics_are_none_and_duplicates_are_refused() {
    let env = require_env!();
    let admin = admin(env);
    let missing = unique_name("missing");
    let described = admin
        .describe_topics(std::slice::from_ref(&missing))
        .await
        .expect("describe");
    assert_eq!(described, vec![(missing, Ok(None))]);

    let name = unique_name("dup");
    let spec = NewTopicSpec {
        name: name.clone(),
        partitions: 1,
        replication_factor: None,
        config: BTreeMap::new(),
    };
    assert_eq!(
        admin
            .create_topics(std::slice::from_ref(&spec))
            .await
            .expect("create")[0]
            .1,
        Ok(())
    );
    let again = admin.create_topics(&[spec]).await.expect("create");
    assert_eq!(
        again[0].1.clone().expect_err("exists").code,
        RDKafkaErrorCode::TopicAlreadyExists
    );
    admin.delete_topics(&[name]).await.expect("delete");
}

#[tokio::test]
async fn batched_calls_answer_each_caller_with_its_own_topic() {
    let env = require_env!();
    let batched = Batched::new(admin(env));
    let names: Vec<String> = (0..40).map(|_| unique_name("batch")).collect();
    let creates = names.iter().enumerate().map(|(i, name)| {
        let batched = batched.clone();
        let spec = NewTopicSpec {
            name: name.clone(),
            partitions: 1 + (i % 4) as i32,
            replication_factor: Some(1),
            config: BTreeMap::new(),
        };
        async move { batched.create(spec).await }
    });
    for result in futures::future::join_all(creates).await {
        assert_eq!(result.expect("request"), Ok(()));
    }
    // A created topic shows in the broker's metadata a moment later (seen on a just-started
    // broker): describe until it is there, for at most 10 s.
    let describes = names.iter().map(|name| {
        let batched = batched.clone();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                let state = batched.describe(name).await;
                if !matches!(state, Ok(Ok(None))) || tokio::time::Instant::now() > deadline {
                    return state;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    let states = futures::future::join_all(describes).await;
    for (i, state) in states.into_iter().enumerate() {
        let state = state
            .expect("request")
            .expect("no refusal")
            .expect("exists");
        assert_eq!(state.partitions, 1 + (i % 4) as i32, "{}", names[i]);
    }
    let deletes = names.iter().map(|name| {
        let batched = batched.clone();
        async move { batched.delete(name).await }
    });
    for result in futures::future::join_all(deletes).await {
        assert_eq!(result.expect("request"), Ok(()));
    }
}
