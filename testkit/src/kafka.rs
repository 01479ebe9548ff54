//! Kafka topics that belong to one test.

use std::time::Duration;

use rdkafka::{
    ClientConfig,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
};

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
