//! Cleanup (deletionPolicy: Delete): deletes the Kafka topic, unless an older EventTopic owns it.

use kube::runtime::{controller::Action, events::EventType};
use tracing::info;

use super::{Context, Error, Result};
use crate::{api::EventTopic, kafka, ownership, reconcile::PublishEvent as _};

impl EventTopic {
    /// Deletes the Kafka topic (deletionPolicy: Delete) unless another EventTopic owns it.
    pub async fn cleanup(&self, ctx: &Context) -> Result<Action> {
        let name = self.kafka_topic_name();
        if ownership::is_internal_topic(name) || self.conflicting_owner(&ctx.store).is_some() {
            // The topic belongs to an older EventTopic: deleting this one must not touch it.
            return Ok(Action::await_change());
        }
        match self.kafka_call(ctx, ctx.kafka.delete(name)).await? {
            Ok(()) => {
                info!(topic = name, "deleted Kafka topic");
                self.publish(
                    &ctx.events,
                    EventType::Normal,
                    "Deleted",
                    "Delete",
                    format!("deleted Kafka topic {name} (deletionPolicy: Delete)"),
                )
                .await;
                Ok(Action::await_change())
            }
            Err(refusal) => Err(Error::Kafka(kafka::Error::Request {
                code: refusal.code,
                message: format!("deleting Kafka topic {name}: {}", refusal.message),
            })),
        }
    }
}
