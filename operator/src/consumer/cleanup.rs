//! Cleanup: stops the workers, then deletes the consumer's own topics (the retry tiers and the
//! managed dead-letter topic; never an EventTopic's), and the topics of retry tiers no longer
//! in the spec.

use k8s_openapi::api::apps::v1::Deployment;
use kube::{
    Api, ResourceExt,
    api::DeleteParams,
    runtime::{controller::Action, events::EventType, reflector::ObjectRef},
};
use tracing::info;

use super::{Context, Error, Result, deployment, topics};
use crate::{api::EventConsumer, reconcile::PublishEvent as _};

impl EventConsumer {
    /// Stops the workers, then deletes the consumer's own topics (the retry tiers and the
    /// managed dead-letter topic; never an EventTopic's).
    pub async fn cleanup(&self, ctx: &Context) -> Result<Action> {
        let namespace = self.namespace_or_err()?;
        // The workers first, so none writes to a topic being deleted (garbage collection
        // would remove the Deployment too, but only after the finalizer is done).
        let deployments = Api::<Deployment>::namespaced(ctx.client.clone(), &namespace);
        match deployments
            .delete(
                &deployment::name(&self.name_any()),
                &DeleteParams::foreground(),
            )
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(Error::Kube(e)),
        }
        let mut names: Vec<String> = Vec::new();
        if let Some(t) = self.status.as_ref().and_then(|s| s.topics.as_ref()) {
            names.extend(t.retry.iter().cloned());
            if t.dead_letter_managed {
                names.extend(t.dead_letter.iter().cloned());
            }
        }
        // Also what the spec names now, in case the status never got written.
        if let Ok(resolved) = ctx.resolve(self) {
            names.extend(topics::of(self, &resolved).into_iter().map(|t| t.name));
        }
        names.sort();
        names.dedup();
        self.delete_topics(ctx, &names, "the EventConsumer is being deleted")
            .await?;
        ctx.lag.forget(&ObjectRef::from_obj(self));
        ctx.metrics
            .forget_consumer(&self.namespace().unwrap_or_default(), &self.name_any());
        Ok(Action::await_change())
    }

    /// Deletes the consumer's own topics `names` (already gone counts as deleted), with an
    /// Event for each saying `why`.
    pub(super) async fn delete_topics(
        &self,
        ctx: &Context,
        names: &[String],
        why: &str,
    ) -> Result<()> {
        for name in names {
            match ctx.kafka.delete(name).await.map_err(Error::Kafka)? {
                Ok(()) => {
                    info!(topic = name, why, "deleted consumer topic");
                    self.publish(
                        &ctx.events,
                        EventType::Normal,
                        "TopicDeleted",
                        "Delete",
                        format!("deleted Kafka topic {name}: {why}"),
                    )
                    .await;
                }
                Err(refusal) => {
                    return Err(Error::DeleteRefused {
                        topic: name.clone(),
                        refusal,
                    });
                }
            }
        }
        Ok(())
    }
}
