//! What happens to one record once its lane lets it start: parse (a tombstone is skipped),
//! check against its topic's contract (with `--contracts-dir`), de-duplicate, deliver with
//! in-process retries, and otherwise copy it to the next retry tier or the dead-letter topic —
//! waiting, however long, until Kafka acknowledges the copy, because only then may the record
//! count as done (DESIGN §5); a copy Kafka refuses for good takes the bounded way of
//! [`super::copy`] instead. No copy is written for a record whose partition was revoked. Each
//! path ends in a [`Finished`], which logs the record's one line (topic, partition, offset,
//! event id) and counts it in `ferry_worker_processed_total` (see [`super::finish`]).

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use ferry_common::{backoff, headers, otel};
use rdkafka::{
    Message,
    message::{Header, Headers, OwnedHeaders, OwnedMessage},
    producer::{FutureProducer, FutureRecord},
    util::Timeout,
};
use tokio::sync::watch;

use super::{
    assignment::{Assignment, Tp},
    dedup::{Claim, Claimed, DedupStore},
    delivery::{Delivery, Position, Verdict, traceparent},
    finish::{Finish, Finished},
    metrics::{CopyKind, Metrics},
    retry::{self, Origin, Route, Tiers},
    trace,
};
use crate::{
    contracts::{self, Contracts},
    envelope::Envelope,
};

/// Everything a delivery task needs, shared by all of them.
pub struct Context {
    /// The consumer group (for `ferry-group` and tier names).
    pub group: String,
    /// Where dead letters go.
    pub dead_letter_topic: String,
    /// The retry tiers.
    pub tiers: Tiers,
    /// The HTTP side.
    pub delivery: Delivery,
    /// Writes retry and dead-letter copies (acks=all, idempotent).
    pub producer: FutureProducer,
    /// Delivered event ids, when de-duplication is on.
    pub dedup: Option<DedupStore>,
    /// In-process attempts on the main topic.
    pub attempts: u32,
    /// In-process backoff bounds.
    pub backoff: (Duration, Duration),
    /// Ownership and windows.
    pub assignment: Arc<Assignment>,
    /// Counters.
    pub metrics: Metrics,
    /// The event contracts of `--contracts-dir`, kept current; `None`: records are not checked.
    pub contracts: Option<watch::Receiver<Arc<Contracts>>>,
}

/// One record on its way.
#[derive(Debug)]
pub struct Job {
    /// The partition it was read from.
    pub tp: Tp,
    /// The generation of that partition's assignment when it was read.
    pub generation: u64,
    /// The record.
    pub message: OwnedMessage,
    /// The main topic (itself, or the one a tier belongs to).
    pub main_topic: Arc<str>,
    /// Which tier it was read from (`None`: the main topic).
    pub tier: Option<usize>,
    /// Where it was first read.
    pub origin: Origin,
}

/// What a copy carries.
enum Copy {
    /// The record's key, payload and these headers (its own plus the copy's).
    Full(OwnedHeaders),
    /// Only these headers (and a small key): a reference to the record.
    Reference(OwnedHeaders),
}

/// How writing a copy ended.
enum Copied {
    /// Acknowledged by Kafka.
    Written,
    /// Refused for a reason retrying cannot change.
    Refused(rdkafka::error::KafkaError),
    /// The record's partition was revoked before the copy was written.
    Revoked,
}

fn header<'a>(message: &'a OwnedMessage, name: &str) -> Option<&'a str> {
    message
        .headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| std::str::from_utf8(h.value?).ok())
}

impl Job {
    /// The record's event id for a log line of a rare path (a copy to a retry tier or the
    /// dead-letter topic), parsed again there rather than carried by every delivery; `None`
    /// for a payload that is not an envelope.
    pub fn event_id(&self) -> Option<String> {
        Envelope::parse(self.message.payload()?).ok().map(|e| e.id)
    }

    fn attempts_so_far(&self) -> u32 {
        header(&self.message, headers::ATTEMPTS)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

impl Context {
    /// Runs the job to its end and marks it done in its window.
    pub async fn process(&self, job: &Job, route: Route) -> Finish {
        let finished = match route {
            Route::Follow { tier } => {
                Box::pin(self.park(
                    job,
                    tier,
                    job.attempts_so_far(),
                    "following an earlier record of its key",
                ))
                .await
            }
            Route::Deliver => self.deliver(job).await,
        };
        let finish = finished.emit(job, &self.metrics);
        if finish != Finish::Abandoned {
            self.assignment
                .finish(&job.tp, job.generation, job.message.offset());
        }
        finish
    }

    async fn deliver(&self, job: &Job) -> Finished {
        let attempts = job.attempts_so_far();
        let Some(payload) = job.message.payload() else {
            return Finished::Tombstone;
        };
        let envelope = match Envelope::parse(payload) {
            Ok(e) => e,
            Err(e) => {
                return Box::pin(self.dead_letter(job, attempts, &format!("poison: {e}"))).await;
            }
        };
        if let Some(reason) = self.breaks_contract(&job.main_topic, &envelope) {
            return Box::pin(self.dead_letter(job, attempts, &reason)).await;
        }
        let id = envelope.id.as_str();
        let claim = match &self.dedup {
            Some(dedup) => {
                let still_wanted = || self.assignment.is_current(&job.tp, job.generation);
                match Box::pin(self.until_ok(job, || dedup.claim(id, still_wanted))).await {
                    Some(Claimed::Fresh(claim)) => Some(claim),
                    Some(Claimed::Duplicate) => {
                        return Finished::Duplicate { id: id.to_owned() };
                    }
                    Some(Claimed::GaveUp) | None => return Finished::Abandoned,
                }
            }
            None => None,
        };
        let finish = self
            .deliver_claimed(job, &envelope, id, claim.as_ref())
            .await;
        if let Some(claim) = claim {
            Box::pin(claim.release()).await;
        }
        finish
    }

    /// Why `envelope` breaks `topic`'s contract, if it has one and it does: every violation's
    /// path. Checked once, before the first attempt: the same record never passes later.
    fn breaks_contract(&self, topic: &str, envelope: &Envelope) -> Option<String> {
        let contracts = self.contracts.as_ref()?.borrow().clone();
        let violations = contracts::check(contracts.get(topic)?, envelope).err()?;
        Some(format!("schema violation: {violations}"))
    }

    /// Delivers with in-process retries, then parks or dead-letters; with de-duplication on,
    /// the caller holds the id's claim throughout.
    async fn deliver_claimed(
        &self,
        job: &Job,
        envelope: &Envelope,
        id: &str,
        claim: Option<&Claim<'_>>,
    ) -> Finished {
        let mut attempts = job.attempts_so_far();
        let position = Position {
            topic: &job.main_topic,
            partition: job.origin.0,
            offset: job.origin.1,
        };
        let kafka_trace = header(&job.message, "traceparent");
        // Without a span of ours, the request carries the record's own `traceparent` (or one
        // made up once, the same for every attempt); chosen only then, as tracing makes its own.
        let mut fallback = None;
        let envelope_trace = envelope.headers.get("traceparent").and_then(|v| v.as_str());
        // A tier pass is one attempt; the main topic gets `--retry-attempts`.
        let in_process = if job.tier.is_some() {
            1
        } else {
            self.attempts.max(1)
        };
        let mut waits = backoff::delivery_retry(
            self.backoff.0,
            self.backoff.1,
            usize::try_from(in_process - 1).unwrap_or(0),
        );
        let (reason, span) = loop {
            attempts += 1;
            let span = trace::attempt(job, kafka_trace, envelope_trace, attempts);
            let own = span.as_ref().map(otel::Span::traceparent);
            let traceparent = match &own {
                Some(own) => own.as_str(),
                None => fallback
                    .get_or_insert_with(|| traceparent(envelope, kafka_trace))
                    .as_str(),
            };
            let started = Instant::now();
            let verdict = self
                .delivery
                .deliver(envelope, &position, attempts, traceparent)
                .await;
            self.metrics
                .observe_latency(started.elapsed().as_secs_f64());
            match verdict {
                Verdict::Delivered => {
                    if let Some(claim) = claim
                        && let Err(e) = Box::pin(claim.delivered()).await
                    {
                        tracing::warn!(id, error = %e, "delivered, but the id was not stored; a redelivery would not be skipped");
                    }
                    return Finished::Delivered { attempts };
                }
                Verdict::Permanent { reason } => {
                    let finished = Box::pin(self.dead_letter(job, attempts, &reason)).await;
                    trace::settled(span, &reason, &finished);
                    return finished;
                }
                Verdict::Retry {
                    reason,
                    retry_after,
                } => {
                    let Some(delay) = waits.next() else {
                        break (reason, span);
                    };
                    let delay = delay.max(retry_after.unwrap_or_default());
                    if delay > self.backoff.1 {
                        // Asked to wait longer than in-process retries may: a tier's job.
                        break (reason, span);
                    }
                    trace::retrying(span, &reason, delay);
                    tracing::info!(topic = %job.tp.0, partition = job.tp.1, offset = job.message.offset(), id, attempts, reason, delay_ms = delay.as_millis() as u64, "delivery failed; retrying");
                    tokio::time::sleep(delay).await;
                    if !self.assignment.is_current(&job.tp, job.generation) {
                        return Finished::Abandoned;
                    }
                }
            }
        };
        let next = job.tier.map_or(0, |t| t + 1);
        let finished = if next < self.tiers.len() {
            Box::pin(self.park(job, next, attempts, &reason)).await
        } else {
            Box::pin(self.dead_letter(job, attempts, &reason)).await
        };
        trace::settled(span, &reason, &finished);
        finished
    }

    /// Retries a store operation until it succeeds or the job's assignment is gone.
    async fn until_ok<T, F, Fut>(&self, job: &Job, mut op: F) -> Option<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = super::dedup::Result<T>>,
    {
        let mut waits = backoff::dedup_store_unavailable();
        loop {
            match op().await {
                Ok(v) => return Some(v),
                Err(e) => {
                    tracing::warn!(error = %e, "idempotency store unavailable; retrying");
                    tokio::time::sleep(waits.next().unwrap_or(backoff::COPY_WRITE_MAX)).await;
                    if !self.assignment.is_current(&job.tp, job.generation) {
                        return None;
                    }
                }
            }
        }
    }

    /// Copies the record to tier `tier`, on its original partition number; a copy the tier
    /// refuses for good sends the record on to the dead-letter topic instead.
    async fn park(&self, job: &Job, tier: usize, attempts: u32, reason: &str) -> Finished {
        let Some(topic) = self.tiers.topic(&job.main_topic, tier) else {
            return Box::pin(self.dead_letter(job, attempts, reason)).await;
        };
        let not_before = retry::unix_millis(self.tiers.not_before(tier, SystemTime::now()));
        let headers = self.copy_headers(job, attempts, reason).insert(Header {
            key: headers::NOT_BEFORE,
            value: Some(&not_before.to_string()),
        });
        match self
            .write_copy(job, topic, Some(job.origin.0), Copy::Full(headers))
            .await
        {
            Copied::Written => Finished::Parked {
                tier,
                retry_topic: topic.to_owned(),
                attempts,
                reason: reason.to_owned(),
            },
            Copied::Revoked => Finished::Abandoned,
            Copied::Refused(e) => {
                self.refused(job, CopyKind::retry, topic, &e);
                Box::pin(self.dead_letter(job, attempts, reason)).await
            }
        }
    }

    /// Copies the record to the dead-letter topic with the reason; if the topic refuses the
    /// copy for good, writes a reference copy there (see [`super::copy`]).
    async fn dead_letter(&self, job: &Job, attempts: u32, reason: &str) -> Finished {
        let failed_at = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        let headers =
            self.dead_letter_headers(self.copy_headers(job, attempts, reason), &failed_at);
        let topic = &self.dead_letter_topic;
        let refusal = match self.write_copy(job, topic, None, Copy::Full(headers)).await {
            Copied::Written => {
                return Finished::DeadLettered {
                    dead_letter_topic: topic.clone(),
                    attempts,
                    reason: reason.to_owned(),
                };
            }
            Copied::Revoked => return Finished::Abandoned,
            Copied::Refused(e) => e,
        };
        self.refused(job, CopyKind::dead_letter, topic, &refusal);
        let refused = format!("{topic}: {refusal}");
        let reference = self.dead_letter_headers(
            Self::origin_headers(
                OwnedHeaders::new().insert(Header {
                    key: headers::COPY_REFUSED,
                    value: Some(&refused),
                }),
                job,
                attempts,
                reason,
            ),
            &failed_at,
        );
        match self
            .write_copy(job, topic, None, Copy::Reference(reference))
            .await
        {
            Copied::Written => Finished::Referenced {
                dead_letter_topic: topic.clone(),
                attempts,
                reason: reason.to_owned(),
                copy_refused: refusal.to_string(),
            },
            Copied::Revoked => Finished::Abandoned,
            Copied::Refused(e) => {
                self.refused(job, CopyKind::dead_letter, topic, &e);
                Finished::Lost {
                    dead_letter_topic: topic.clone(),
                    attempts,
                    reason: reason.to_owned(),
                    copy_refused: refusal.to_string(),
                    reference_refused: e.to_string(),
                }
            }
        }
    }

    /// A copy Kafka refused for good: logged and counted here, in one place (alert on the
    /// count; what became of the record is the outcome's own line).
    fn refused(&self, job: &Job, copy: CopyKind, topic: &str, error: &rdkafka::error::KafkaError) {
        self.metrics.copy_refused(copy);
        tracing::warn!(topic = %job.tp.0, partition = job.tp.1, offset = job.message.offset(), id = job.event_id().as_deref(), copy = ?copy, copy_topic = topic, error = %error, "Kafka refuses the copy for good; the record takes the next way");
    }

    /// `headers` plus what only dead-letter copies (full or reference) carry: the group that
    /// gave up and when.
    fn dead_letter_headers(&self, headers: OwnedHeaders, failed_at: &str) -> OwnedHeaders {
        headers
            .insert(Header {
                key: headers::GROUP,
                value: Some(&self.group),
            })
            .insert(Header {
                key: headers::FAILED_AT,
                value: Some(failed_at),
            })
    }

    /// The record's own headers (without older `ferry-*` ones) plus the copy's.
    fn copy_headers(&self, job: &Job, attempts: u32, reason: &str) -> OwnedHeaders {
        let mut headers = OwnedHeaders::new();
        if let Some(original) = job.message.headers() {
            for h in original.iter() {
                if !retry::FERRY_HEADERS.contains(&h.key) {
                    headers = headers.insert(h);
                }
            }
        }
        Self::origin_headers(headers, job, attempts, reason)
    }

    /// `headers` plus where the record came from, how often it was tried and why it failed:
    /// what every tier, dead-letter and reference copy carries.
    fn origin_headers(
        headers: OwnedHeaders,
        job: &Job,
        attempts: u32,
        reason: &str,
    ) -> OwnedHeaders {
        headers
            .insert(Header {
                key: headers::ERROR,
                value: Some(reason),
            })
            .insert(Header {
                key: headers::ORIGINAL_TOPIC,
                value: Some(&*job.main_topic),
            })
            .insert(Header {
                key: headers::ORIGINAL_PARTITION,
                value: Some(&job.origin.0.to_string()),
            })
            .insert(Header {
                key: headers::ORIGINAL_OFFSET,
                value: Some(&job.origin.1.to_string()),
            })
            .insert(Header {
                key: headers::ATTEMPTS,
                value: Some(&attempts.to_string()),
            })
    }

    /// Writes a copy until Kafka acknowledges it (`Written`) or refuses it for good
    /// (`Refused`); transient errors are retried. `Revoked` if the record's partition was
    /// revoked first: the record stays uncommitted, so the next owner redoes it, and this
    /// worker writes no copy of it any more (each send happens under a copy fence the
    /// revocation waits for, see [`super::assignment`]).
    async fn write_copy(
        &self,
        job: &Job,
        topic: &str,
        partition: Option<i32>,
        copy: Copy,
    ) -> Copied {
        let (payload, key, headers) = match copy {
            Copy::Full(headers) => (job.message.payload(), job.message.key(), headers),
            Copy::Reference(headers) => (
                None,
                job.message
                    .key()
                    .filter(|k| k.len() <= super::copy::REFERENCE_KEY_MAX),
                headers,
            ),
        };
        let mut waits = backoff::copy_write();
        loop {
            let Some(fence) = self.assignment.begin_copy(&job.tp, job.generation) else {
                return Copied::Revoked;
            };
            let mut record = FutureRecord::<[u8], [u8]>::to(topic).headers(headers.clone());
            if let Some(payload) = payload {
                record = record.payload(payload);
            }
            if let Some(key) = key {
                record = record.key(key);
            }
            if let Some(p) = partition {
                record = record.partition(p);
            }
            let sent = self.producer.send(record, Timeout::Never).await;
            drop(fence);
            match sent {
                Ok(_) => return Copied::Written,
                Err((e, _)) if super::copy::is_permanent(&e) => return Copied::Refused(e),
                Err((e, _)) => {
                    // Retried, not lost: WARN (ERROR is for a record that is lost).
                    tracing::warn!(topic = %job.tp.0, partition = job.tp.1, offset = job.message.offset(), copy_topic = topic, error = %e, "cannot write the copy; the record stays uncommitted and is retried");
                }
            }
            tokio::time::sleep(waits.next().unwrap_or(backoff::COPY_WRITE_MAX)).await;
        }
    }
}
