//! The run loop after a rebalance: stale work dropped, and with ordered retries, each newly
//! assigned main partition gated until its retry tiers are read back (see
//! [`crate::worker::scan`]) and the parking index rebuilt from what they hold.

use std::{sync::Arc, time::Duration};

use super::RunLoop;
use crate::worker::{
    assignment::Tp,
    rebuild,
    retry::Source,
    scan::{Gate, LAYOUT_RETRY, SCAN_RETRY, ScanDone, ScanOutcome, ScanRequest},
};

impl RunLoop {
    /// After a rebalance: drops queued work of partitions that are no longer ours (or were
    /// re-assigned), and with ordered retries, closes the gates of newly assigned main
    /// partitions and starts reading their tiers back.
    pub(super) fn on_rebalance(&mut self) {
        let assignment = &self.assignment;
        self.intakes
            .retain(|(tp, intake)| assignment.is_current(tp, intake.generation));
        self.scheduler
            .retain(|job| assignment.is_current(&job.tp, job.generation));
        if !self.ordered_retries() {
            return;
        }
        for (tp, generation) in self.assignment.partitions() {
            if self.context.tiers.source(&tp.0) != Some(&Source::Main)
                || self
                    .gates
                    .get(&tp)
                    .is_some_and(|g| g.generation == generation)
            {
                continue;
            }
            // Closed until the scan is back: none of the partition's records start before.
            self.gates.insert(
                tp.clone(),
                Gate {
                    generation,
                    open: false,
                },
            );
            let (topic, partition) = (tp.0.clone(), tp.1);
            self.parking
                .forget(|(t, _), origin| *t == topic && origin.0 == partition);
            self.start_scan(tp, generation, Duration::ZERO, None);
        }
        let assignment = &self.assignment;
        self.gates
            .retain(|tp, g| assignment.is_current(tp, g.generation));
        let gates = &self.gates;
        self.parking
            .forget(|(t, _), origin| !gates.contains_key(&(t.clone(), origin.0)));
    }

    /// Reads main partition `main`'s tiers back (see [`ScanRequest::spawn`]).
    pub(super) fn start_scan(
        &self,
        main: Tp,
        generation: u64,
        delay: Duration,
        scan: Option<Box<rebuild::Scan>>,
    ) {
        let tiers = &self.context.tiers;
        let request = ScanRequest {
            tiers: (0..tiers.len())
                .filter_map(|i| tiers.topic(&main.0, i).map(|t| (i, t.to_owned())))
                .collect(),
            subscription: tiers.subscriptions(),
            base: self.base.clone(),
            group: self.context.group.clone(),
            budget: self.scan_timeout,
            main,
            generation,
        };
        request.spawn(delay, scan, self.scans.0.clone());
    }

    /// An attempt at a scan came back: once read to the end (and the layout holds), its
    /// waiting records go into the index and the gate opens; otherwise the scan goes on or is
    /// tried again, the gate staying closed meanwhile.
    pub(super) fn on_scan(&mut self, done: ScanDone) {
        let ScanDone {
            main,
            generation,
            outcome,
        } = done;
        if self
            .gates
            .get(&main)
            .is_none_or(|g| g.generation != generation)
        {
            // Stale: its consumer is closed on a blocking thread, not on the run loop.
            if let Some(scan) = outcome.into_scan() {
                tokio::task::spawn_blocking(move || drop(scan));
            }
            return;
        }
        match outcome {
            ScanOutcome::Done(waiting) => {
                // Every tier partition of this partition must be this worker's too (see `layout`).
                let strays: Vec<&str> = (0..self.context.tiers.len())
                    .filter_map(|i| self.context.tiers.topic(&main.0, i))
                    .filter(|t| {
                        self.assignment
                            .generation(&(Arc::from(*t), main.1))
                            .is_none()
                    })
                    .collect();
                if !strays.is_empty() {
                    tracing::warn!(topic = %main.0, partition = main.1, tiers = ?strays, "the partition's retry tiers are assigned to another worker (an assignor that does not co-partition, or members that subscribe differently); the partition waits");
                    self.start_scan(main, generation, LAYOUT_RETRY, None);
                    return;
                }
                tracing::info!(topic = %main.0, partition = main.1, waiting = waiting.len(), "retry tiers read; partition open");
                for (key, origin, tier) in waiting {
                    if let Some(key) = self.parking_key_of(&main.0, key.as_deref(), origin.0) {
                        self.parking.parked(&key, origin, tier);
                    }
                }
                if let Some(gate) = self.gates.get_mut(&main) {
                    gate.open = true;
                }
            }
            ScanOutcome::Partial(scan) => {
                tracing::debug!(topic = %main.0, partition = main.1, found = scan.found(), "retry tiers partly read; going on");
                self.start_scan(main, generation, Duration::ZERO, Some(scan));
            }
            ScanOutcome::Failed {
                scan,
                error,
                layout: true,
            } => {
                tracing::warn!(topic = %main.0, partition = main.1, error, "retry-tier layout refused; the partition waits and the layout is checked again");
                self.start_scan(main, generation, LAYOUT_RETRY, scan);
            }
            ScanOutcome::Failed { scan, error, .. } => {
                tracing::warn!(topic = %main.0, partition = main.1, error, "cannot read the retry tiers; the partition waits and the read is retried where it stopped");
                self.start_scan(main, generation, SCAN_RETRY, scan);
            }
        }
    }
}
