//! The one write of an EventTopic's status: what the reconcile found, with its producers'
//! access folded in ([`crate::access_status`]), applied under the operator's field manager
//! unless nothing changed ([`crate::written_status`]: the cache may lag behind the last write).

use kube::{Api, ResourceExt};

use super::{Context, Error, KIND, Result};
use crate::{
    access_status::{self, Access},
    api::{EventTopic, EventTopicStatus},
    field_manager,
    kafka::TopicState,
    reconcile,
    status::{self, Outcome},
};

impl EventTopic {
    /// Writes the status for `outcome` (server-side apply), unless nothing changed.
    pub(super) async fn finish(
        &self,
        ctx: &Context,
        outcome: Outcome,
        actual: Option<&TopicState>,
    ) -> Result<()> {
        let previous = self.status.clone().unwrap_or_default();
        let now = jiff::Timestamp::now().to_string();
        let generation = self.metadata.generation;
        let namespace = self.namespace().ok_or(Error::MissingNamespace)?;
        let entry = ctx.access.get(
            access_status::Kind::EventTopic,
            &namespace,
            &self.name_any(),
        );
        let access = Access::state(entry.as_ref(), generation, !self.spec.producers.is_empty());
        let outcome = access.fold(outcome);
        ctx.metrics
            .reconciled(KIND, reconcile::outcome_label(&outcome));
        let mut conditions = status::conditions(&previous.conditions, &outcome, generation, &now);
        conditions.push(access.condition(&previous.conditions, generation, &now));
        let status = EventTopicStatus {
            observed_generation: self.metadata.generation,
            topic_name: Some(self.kafka_topic_name().to_owned()),
            topic_id: actual
                .map(|a| a.topic_id.clone())
                .or_else(|| previous.topic_id.clone()),
            partitions: actual.map(|a| a.partitions).or(previous.partitions),
            replication_factor: actual
                .map(|a| a.replication_factor)
                .or(previous.replication_factor),
            // What the identity controller confirmed for this generation; until then, the last
            // access shown.
            access: match entry {
                Some(e) if e.generation == generation => {
                    Some(e.declared).filter(|d| !d.principals.is_empty())
                }
                _ => previous.access.clone(),
            },
            conditions,
        };
        let uid = self.metadata.uid.clone().unwrap_or_default();
        if ctx.written.is_current(&uid, &previous, &status) {
            return Ok(());
        }
        let api = Api::<EventTopic>::namespaced(ctx.client.clone(), &namespace);
        reconcile::apply_status(&api, &self.name_any(), field_manager::OPERATOR, &status)
            .await
            .map_err(Error::Kube)?;
        ctx.written.record(uid, status);
        Ok(())
    }
}
