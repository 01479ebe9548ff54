//! Reading a main partition's retry tiers back after an assignment (ordered retries only), the
//! run loop's side of [`super::rebuild`].
//!
//! Until its tiers are read, a newly assigned main partition's [`Gate`] is closed and none of
//! its records start: a later record of a key waiting in a tier must not overtake it. A scan
//! runs on a blocking thread for one attempt of `--tier-scan-timeout` and reports back over a
//! channel ([`ScanDone`]); a scan not finished goes on where it stopped, a failed one is tried
//! again after [`SCAN_RETRY`], a refused layout after [`LAYOUT_RETRY`].

use std::time::Duration;

use rdkafka::ClientConfig;
use tokio::sync::mpsc;

use super::{assignment::Tp, rebuild};

/// How long a failed tier scan waits before it is tried again.
pub const SCAN_RETRY: Duration = Duration::from_secs(1);
/// How long a partition whose tier layout is refused waits before the layout is checked again
/// (it changes with a rebalance, which starts a new scan anyway; this is the safety net).
pub const LAYOUT_RETRY: Duration = Duration::from_secs(10);

/// Whether a main-topic partition's records may start: closed while its tiers are scanned.
pub struct Gate {
    /// The generation of the assignment it was closed for.
    pub generation: u64,
    /// Whether the partition's tiers were read.
    pub open: bool,
}

/// An attempt at reading a main-topic partition's tiers back, finished.
pub struct ScanDone {
    pub main: Tp,
    pub generation: u64,
    pub outcome: ScanOutcome,
}

/// How an attempt at a scan ended.
pub enum ScanOutcome {
    /// Read to the end: the records waiting in the tiers.
    Done(Vec<rebuild::Waiting>),
    /// The attempt's time ran out; the scan goes on from where it stopped.
    Partial(Box<rebuild::Scan>),
    /// It failed; tried again later (with what it read so far, if anything).
    Failed {
        scan: Option<Box<rebuild::Scan>>,
        error: String,
        layout: bool,
    },
}

impl ScanOutcome {
    /// The unfinished scan it carries, if any (to go on with, or to close).
    pub fn into_scan(self) -> Option<Box<rebuild::Scan>> {
        match self {
            Self::Partial(scan) => Some(scan),
            Self::Failed { scan, .. } => scan,
            Self::Done(_) => None,
        }
    }
}

/// What one attempt at a scan needs.
pub struct ScanRequest {
    /// The main partition whose tiers are read.
    pub main: Tp,
    /// Its assignment's generation, to recognise a stale answer.
    pub generation: u64,
    /// Its tiers: index and topic.
    pub tiers: Vec<(usize, String)>,
    /// Every topic the worker subscribes to (the layout check compares the members').
    pub subscription: Vec<String>,
    /// The shared Kafka settings, for the scan's own consumer.
    pub base: ClientConfig,
    /// The consumer group.
    pub group: String,
    /// How long the attempt may take (`--tier-scan-timeout`).
    pub budget: Duration,
}

impl ScanRequest {
    /// Runs the attempt on a blocking thread after `delay`, going on with `scan` if an earlier
    /// attempt began, and sends its outcome to `done`.
    pub fn spawn(
        self,
        delay: Duration,
        scan: Option<Box<rebuild::Scan>>,
        done: mpsc::UnboundedSender<ScanDone>,
    ) {
        let Self {
            main,
            generation,
            tiers,
            subscription,
            base,
            group,
            budget,
        } = self;
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let (topic, partition) = (main.0.to_string(), main.1);
            let outcome = tokio::task::spawn_blocking(move || {
                let mut scan = match scan {
                    Some(scan) => scan,
                    None => match rebuild::Scan::new(
                        &base,
                        &group,
                        &topic,
                        partition,
                        tiers,
                        subscription,
                    ) {
                        Ok(scan) => Box::new(scan),
                        Err(e) => {
                            return ScanOutcome::Failed {
                                scan: None,
                                error: ferry_common::errors::chain(&e),
                                layout: false,
                            };
                        }
                    },
                };
                match scan.resume(budget) {
                    Ok(true) => ScanOutcome::Done(scan.into_waiting()),
                    Ok(false) => ScanOutcome::Partial(scan),
                    Err(e) => ScanOutcome::Failed {
                        layout: matches!(e, rebuild::Error::Layout(_)),
                        error: ferry_common::errors::chain(&e),
                        scan: Some(scan),
                    },
                }
            })
            .await
            .unwrap_or_else(|e| ScanOutcome::Failed {
                scan: None,
                error: e.to_string(),
                layout: false,
            });
            let _ = done.send(ScanDone {
                main,
                generation,
                outcome,
            });
        });
    }
}
