//! Kafka ACLs one test grants (to a user of `.ferry/env` that has none, say) and revokes when
//! it ends, through the operator's wrapper of librdkafka's ACL API (rdkafka has no safe one,
//! and the operator's is the one wrapper the project keeps). Behind the `acls` feature, so
//! only the test trees that grant ACLs build the operator into their test kit.

use std::time::Duration;

use ferry_operator::kafka::{
    KafkaAdmin,
    acls::{AclBinding, Operation, ResourceType},
};
use rdkafka::ClientConfig;

use crate::{TestEnv, cleanup::run_to_completion};

/// Deadline of one ACL admin request (librdkafka's default request timeout).
const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Literal ALLOW ACLs for one user, granted for one test and revoked when dropped.
pub struct Grant {
    config: ClientConfig,
    bindings: Vec<AclBinding>,
}

impl Grant {
    /// Grants `User:<user>` each `(resource type, name, operation)`.
    pub async fn allow(
        env: &TestEnv,
        user: &str,
        acls: &[(ResourceType, &str, Operation)],
    ) -> Grant {
        let principal = format!("User:{user}");
        let bindings: Vec<AclBinding> = acls
            .iter()
            .map(|(kind, name, op)| AclBinding::allow(&principal, *kind, *name, *op))
            .collect();
        let config = env.kafka_config();
        KafkaAdmin::new(&config, ADMIN_TIMEOUT)
            .expect("admin client")
            .create_acls(&bindings)
            .await
            .expect("ACLs granted");
        Grant { config, bindings }
    }

    /// Grants `User:<user>` each of `operations` on each of `topics`.
    pub async fn topics(
        env: &TestEnv,
        user: &str,
        topics: &[&str],
        operations: &[Operation],
    ) -> Grant {
        let acls: Vec<(ResourceType, &str, Operation)> = topics
            .iter()
            .flat_map(|t| {
                operations
                    .iter()
                    .map(move |op| (ResourceType::Topic, *t, *op))
            })
            .collect();
        Self::allow(env, user, &acls).await
    }
}

impl Drop for Grant {
    fn drop(&mut self) {
        let (config, bindings) = (self.config.clone(), std::mem::take(&mut self.bindings));
        run_to_completion(async move {
            let revoked = match KafkaAdmin::new(&config, ADMIN_TIMEOUT) {
                Ok(admin) => admin.delete_acls(&bindings).await.map(|_| ()),
                Err(e) => Err(e),
            };
            if let Err(e) = revoked {
                eprintln!("cannot revoke test ACLs {bindings:?}: {e}");
            }
        });
    }
}
