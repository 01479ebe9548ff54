//! The run loop's delivery side: ready records started as delivery tasks, routed by the
//! parking index (a record whose key waits in a tier follows it there), and their reports
//! taken back (the lane frees, the parking index follows the record's fate).

use std::sync::Arc;

use rdkafka::Message;

use super::{Report, RunLoop};
use crate::worker::{
    config::Ordering,
    finish::Finish,
    lanes::{self, ParkingKey},
    process::Job,
    retry::Route,
};

impl RunLoop {
    /// Whether records wait in tiers in order (ordering key or partition, with tiers).
    pub(super) fn ordered_retries(&self) -> bool {
        self.ordering != Ordering::Unordered && !self.context.tiers.is_empty()
    }

    pub(super) fn parking_key(&self, job: &Job) -> Option<ParkingKey> {
        self.parking_key_of(&job.main_topic, job.message.key(), job.origin.0)
    }

    pub(super) fn parking_key_of(
        &self,
        main: &Arc<str>,
        key: Option<&[u8]>,
        partition: i32,
    ) -> Option<ParkingKey> {
        let tiered = !self.context.tiers.is_empty();
        lanes::parking_key(self.ordering, tiered, main, key, partition)
    }

    /// Starts ready records while fewer than `--max-in-flight` run.
    pub(super) fn dispatch(&mut self) {
        while self.in_flight < self.max_in_flight {
            let Some((lane, job)) = self.scheduler.pop_ready() else {
                break;
            };
            if !self
                .assignment
                .start(&job.tp, job.generation, job.message.offset())
            {
                // Its partition was revoked since it was read.
                self.scheduler.complete(lane.as_ref());
                continue;
            }
            let route = match self.parking_key(&job) {
                Some(key) if job.tier.is_none() => self.parking.route_new(&key, job.origin),
                Some(key) => self.parking.route_due(&key, job.origin),
                None => Route::Deliver,
            };
            self.in_flight += 1;
            let context = self.context.clone();
            let reports = self.reports.0.clone();
            tokio::spawn(async move {
                let finish = context.process(&job, route).await;
                let _ = reports.send(Report { lane, job, finish });
            });
        }
        self.metrics.set_in_flight(self.in_flight);
    }

    /// A delivery task finished: its lane frees, and its key's parking follows its fate.
    pub(super) fn on_report(&mut self, report: Report) {
        let Report { lane, job, finish } = report;
        self.in_flight -= 1;
        // A report of an older assignment says nothing about today's index: the scan at
        // assignment rebuilt it from the tier topics.
        if let Some(key) = self.parking_key(&job)
            && self.assignment.is_current(&job.tp, job.generation)
        {
            match finish {
                Finish::Parked { tier } => self.parking.parked(&key, job.origin, tier),
                Finish::Done(_) => self.parking.left(&key, job.origin),
                // An abandoned tier record still waits in its tier (uncommitted there); an
                // abandoned main-topic record was never copied.
                Finish::Abandoned if job.tier.is_none() => self.parking.left(&key, job.origin),
                Finish::Abandoned => {}
            }
        }
        self.scheduler.complete(lane.as_ref());
    }
}
