//! Kafka topics that belong to one test.

use std::time::{Duration, Instant};

use rdkafka::{
    ClientConfig,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    consumer::{BaseConsumer, Consumer},
};

/// How long a new topic may take to show in the broker's metadata.
const VISIBLE_WITHIN: Duration = Duration::from_secs(30);

use crate::{TestEnv, cleanup::run_to_completion, unique_name};

/// A topic with a random name, deleted when dropped.
pub struct TempTopic {
    name: String,
    admin_config: ClientConfig,
}

impl TempTopic {
    /// Creates a topic with `partitions` partitions as the admin.
    pub async fn create(env: &TestEnv, partitions: i32) -> anyhow::Result<TempTopic> {
        let name = unique_name("test");
        let admin_config = env.kafka_config();
        let admin: AdminClient<DefaultClientContext> = admin_config.create()?;
        let results = admin
            .create_topics(
                &[NewTopic::new(&name, partitions, TopicReplication::Fixed(1))],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
            )
            .await?;
        for result in results {
            result.map_err(|(topic, code)| anyhow::anyhow!("creating {topic}: {code}"))?;
        }
        // CreateTopics returns once the controller has the topic; the broker's metadata cache
        // learns of it a moment later (longer on a busy machine). Hand it out once usable.
        let consumer: BaseConsumer = admin_config.create()?;
        let topic = name.clone();
        tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + VISIBLE_WITHIN;
            loop {
                let metadata = consumer.fetch_metadata(Some(&topic), Duration::from_secs(5));
                let visible = metadata.as_ref().is_ok_and(|m| {
                    m.topics().iter().any(|t| {
                        t.name() == topic
                            && t.error().is_none()
                            && t.partitions().len() == usize::try_from(partitions).unwrap_or(0)
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
        .await??;
        Ok(TempTopic { name, admin_config })
    }

    /// The topic's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TempTopic {
    fn drop(&mut self) {
        let name = self.name.clone();
        let config = self.admin_config.clone();
        run_to_completion(async move {
            let Ok(admin) = config.create::<AdminClient<DefaultClientContext>>() else {
                return;
            };
            if let Err(e) = admin.delete_topics(&[&name], &AdminOptions::new()).await {
                eprintln!("could not delete test topic {name}: {e}");
            }
        });
    }
}
