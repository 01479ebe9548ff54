//! Kafka topics that belong to one test: [`TempTopic`], with a random name or one the test
//! chose (a worker's retry tiers and dead-letter topic are named after the main topic), and
//! the create / wait-until-visible / delete steps every test topic (the cluster's too) takes.

use std::time::{Duration, Instant};

use rdkafka::{
    ClientConfig,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    consumer::{BaseConsumer, Consumer},
};

use crate::{TestEnv, cleanup::run_to_completion, unique_name};

/// How long a new topic may take to show in the broker's metadata.
const VISIBLE_WITHIN: Duration = Duration::from_secs(30);

/// Deadline of one CreateTopics request (librdkafka's default request timeout).
const CREATE_TIMEOUT: Duration = Duration::from_secs(30);

/// A topic of one test, deleted when dropped.
pub struct TempTopic {
    /// The topic's name (also [`TempTopic::name`]); read it, do not change it: the drop deletes
    /// the topic of this name.
    pub name: String,
    admin_config: ClientConfig,
}

impl TempTopic {
    /// Creates a topic with a random name and `partitions` partitions as the admin.
    pub async fn create(env: &TestEnv, partitions: i32) -> anyhow::Result<TempTopic> {
        Self::create_with(env, &unique_name("test"), partitions, &[]).await
    }

    /// Creates the topic `name` (chosen by the test) with `partitions` partitions.
    pub async fn create_named(
        env: &TestEnv,
        name: &str,
        partitions: i32,
    ) -> anyhow::Result<TempTopic> {
        Self::create_with(env, name, partitions, &[]).await
    }

    /// Creates the topic `name` with `partitions` partitions and topic configs `configs`
    /// (`("max.message.bytes", "2048")`, say), and returns once the broker's metadata shows it.
    pub async fn create_with(
        env: &TestEnv,
        name: &str,
        partitions: i32,
        configs: &[(&str, &str)],
    ) -> anyhow::Result<TempTopic> {
        let admin_config = env.kafka_config();
        let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        for (k, v) in configs {
            topic = topic.set(k, v);
        }
        create_topic(&admin_config, topic).await?;
        // From here on the drop deletes it, even if it never shows.
        let created = TempTopic {
            name: name.to_owned(),
            admin_config,
        };
        wait_visible(&created.admin_config, name, partitions).await?;
        Ok(created)
    }

    /// The topic's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TempTopic {
    fn drop(&mut self) {
        delete_topic(&self.admin_config, &self.name);
    }
}

/// Creates `topic` as the admin of `config`; fails with the broker's reason.
pub(crate) async fn create_topic(config: &ClientConfig, topic: NewTopic<'_>) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = config.create()?;
    let results = admin
        .create_topics(
            &[topic],
            &AdminOptions::new().operation_timeout(Some(CREATE_TIMEOUT)),
        )
        .await?;
    for result in results {
        result.map_err(|(topic, code)| anyhow::anyhow!("creating {topic}: {code}"))?;
    }
    Ok(())
}

/// Waits until the broker's metadata shows `name` with its `partitions`: CreateTopics returns
/// once the controller has the topic; the broker's metadata cache learns of it a moment later
/// (longer on a busy machine).
async fn wait_visible(config: &ClientConfig, name: &str, partitions: i32) -> anyhow::Result<()> {
    let consumer: BaseConsumer = config.create()?;
    let topic = name.to_owned();
    let want = usize::try_from(partitions).unwrap_or(0);
    tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + VISIBLE_WITHIN;
        loop {
            let metadata = consumer.fetch_metadata(Some(&topic), Duration::from_secs(5));
            let visible = metadata.as_ref().is_ok_and(|m| {
                m.topics().iter().any(|t| {
                    t.name() == topic && t.error().is_none() && t.partitions().len() == want
                })
            });
            if visible {
                return Ok(());
            }
            if Instant::now() > deadline {
                anyhow::bail!("topic {topic} not visible in metadata after {VISIBLE_WITHIN:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .await?
}

/// Deletes the topic `name` from a `Drop` (which cannot await), saying so if it cannot.
pub(crate) fn delete_topic(config: &ClientConfig, name: &str) {
    let (config, name) = (config.clone(), name.to_owned());
    run_to_completion(async move {
        let Ok(admin) = config.create::<AdminClient<DefaultClientContext>>() else {
            return;
        };
        if let Err(e) = admin.delete_topics(&[&name], &AdminOptions::new()).await {
            eprintln!("could not delete test topic {name}: {e}");
        }
    });
}
