//! The run loop's intake side: records from the consumer filed into their partition's intake,
//! admitted into the scheduler while the uncommitted window has room, and partitions paused
//! or resumed by their intake (the pure decisions are in [`crate::worker::intake`]).

use std::{sync::Arc, time::Duration};

use rdkafka::{
    Message, TopicPartitionList,
    consumer::Consumer,
    error::KafkaResult,
    message::{BorrowedMessage, OwnedMessage},
};
use tokio::time::Instant;

use super::RunLoop;
use crate::worker::{
    assignment::Tp,
    intake::{self, Intake},
    lanes,
    process::Job,
};

impl RunLoop {
    /// A record (or an error) from the consumer.
    pub(super) fn on_record(&mut self, message: Option<KafkaResult<BorrowedMessage<'_>>>) {
        match message {
            Some(Ok(m)) => self.file(m.detach()),
            Some(Err(e)) => tracing::warn!(error = %e, "consumer error"),
            None => {}
        }
    }

    /// Files a record read from Kafka into its partition's intake.
    pub(super) fn file(&mut self, message: OwnedMessage) {
        let tp: Tp = (Arc::from(message.topic()), message.partition());
        let Some(generation) = self.assignment.generation(&tp) else {
            return;
        };
        let Some(source) = self.context.tiers.source(message.topic()) else {
            return;
        };
        let placed = intake::place(
            &message,
            &tp,
            source,
            Instant::now(),
            std::time::SystemTime::now(),
        );
        let index = match self.intakes.iter().position(|(t, _)| *t == tp) {
            Some(i) => i,
            None => {
                let fresh = Intake::new(&tp, placed.main_topic.clone(), generation);
                self.intakes.push((tp.clone(), fresh));
                self.intakes.len() - 1
            }
        };
        let intake = &mut self.intakes[index].1;
        if intake.generation != generation {
            *intake = Intake::new(&tp, placed.main_topic.clone(), generation);
        }
        intake.next = Some(message.offset() + 1);
        intake.held.push(
            placed.due,
            Job {
                tp,
                generation,
                message,
                main_topic: placed.main_topic,
                tier: placed.tier,
                origin: placed.origin,
            },
        );
    }

    /// Moves due records from the intakes into the scheduler while the window has room, round
    /// robin over partitions.
    pub(super) fn admit(&mut self) {
        let now = Instant::now();
        let mut window = self.assignment.window();
        let n = self.intakes.len();
        let ordered_retries = self.ordered_retries();
        let mut idle_rounds = 0;
        while window < self.max_in_flight && n > 0 && idle_rounds < n {
            self.cursor = (self.cursor + 1) % n;
            let (tp, intake) = &mut self.intakes[self.cursor];
            let gate_open = match self.gates.get(&intake.main) {
                Some(gate) => gate.open,
                // No gate: nothing to read back (no ordered retries); or a partition assigned
                // a moment ago whose gate the run loop has yet to close; or a tier partition
                // whose topic partition is not this worker's, held: its records belong with
                // that partition's owner (see `layout`).
                None => !ordered_retries,
            };
            let Some(job) = gate_open.then(|| intake.held.pop_due(now)).flatten() else {
                idle_rounds += 1;
                continue;
            };
            idle_rounds = 0;
            if !self
                .assignment
                .admit(tp, intake.generation, job.message.offset())
            {
                continue;
            }
            window += 1;
            let lane = lanes::lane(self.ordering, &job.tp, job.message.key());
            self.scheduler.push(lane, job);
        }
    }

    /// Pauses or resumes partitions by their intake (see [`intake::flow`]).
    pub(super) fn flow(&mut self) {
        let now = Instant::now();
        for (tp, intake) in &mut self.intakes {
            let Some(pause) = intake::flow(
                intake.held.len(),
                intake.held.waiting_until(now).is_some(),
                intake.paused,
                self.intake_high,
                self.intake_low,
            ) else {
                continue;
            };
            let mut list = TopicPartitionList::new();
            list.add_partition(&tp.0, tp.1);
            let result = if pause {
                self.consumer.pause(&list)
            } else {
                // Seek to where the intake ends: a partition paused right after an
                // assignment was seen not to fetch again on a bare resume (librdkafka
                // 2.12), and the seek also drops anything fetched twice.
                self.consumer
                    .resume(&list)
                    .and_then(|()| match intake.next {
                        Some(next) => self.consumer.seek(
                            &tp.0,
                            tp.1,
                            rdkafka::Offset::Offset(next),
                            Duration::ZERO,
                        ),
                        None => Ok(()),
                    })
            };
            match result {
                Ok(()) => {
                    tracing::debug!(topic = %tp.0, partition = tp.1, paused = pause, held = intake.held.len(), "intake flow control");
                    intake.paused = pause;
                }
                Err(e) => {
                    tracing::warn!(topic = %tp.0, partition = tp.1, error = %e, "pause/resume failed")
                }
            }
        }
    }
}
