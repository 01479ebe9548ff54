//! A late result during a real rebalance (DESIGN §5 "Rebalances and deploys"): worker A's
//! delivery of event X is held open by the service while a second worker joins the group (A's
//! partitions are revoked, A's drain deadline passes, X is abandoned with its request still
//! open) and leaves again (A gets the partitions back under a new generation). Only then does
//! the service answer X's first request 2xx: a late result of an old assignment reaches A.
//!
//! Checked, while events keep arriving on the same keys throughout:
//! - committed offsets never pass a record the service had not answered 2xx (sampled every
//!   75 ms for the whole test),
//! - X's partition is committed past X only after a request of X other than the late one was
//!   answered 2xx: the late result commits nothing,
//! - every event is delivered, and A keeps going: its commits reach the end of every
//!   partition (a leaked count of an old window would keep A's window full and stall them).

mod worker;

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering as AtomicOrdering},
    },
    time::{Duration, Instant},
};

use ferry_testkit::{TestEnv, require_env, unique_name};
use rdkafka::producer::FutureRecord;
use worker::{
    CommitSample, CommitSampler, Received, Target, Topics, Wait, envelope, producer, spawn_worker,
    wait_group,
};

const GROUP_OPTIONS: [&str; 2] = [
    // The broker's minimum: a member that stops heartbeating leaves within seconds.
    "--kafka-option=session.timeout.ms=6000",
    "--kafka-option=heartbeat.interval.ms=1000",
];
/// Keys produced round robin; key `k<i>` goes to partition `i % 2`, so both partitions see
/// several keys and X's key keeps getting records behind X.
const KEYS: u64 = 8;
/// X is the event with this index: key `k0`, partition 0.
const X_INDEX: u64 = 16;
/// X's partition.
const X_PARTITION: i32 = 0;
/// The event after X on X's partition (key `k2`): not held back by X's key, so every
/// assignment of the partition, which starts again at X, delivers it once more.
const NEXT_INDEX: u64 = X_INDEX + 2;
/// Pause between produced events (with the acknowledgement, ~25 events/s: enough to fill
/// the window of 32 within the second X is held before B joins).
const PRODUCE_EVERY: Duration = Duration::from_millis(25);
/// How long the service takes to answer every later request of X. Long enough that a commit
/// resting on the late answer alone would be seen by the sampler in between.
const REDELIVERY_ANSWER_DELAY: Duration = Duration::from_secs(2);
/// How often the committed offsets are sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(75);
/// Bound on each wait for the group, a held request or deliveries.
const WAIT: Duration = Duration::from_secs(30);

/// One produced record: its event id, partition and offset.
type Produced = (String, i32, i64);

/// Produces an event every [`PRODUCE_EVERY`] until `stop`, each acknowledged before the next.
async fn produce_until(
    env: &'static TestEnv,
    topic: String,
    stop: Arc<AtomicBool>,
) -> Vec<Produced> {
    let producer = producer(env);
    let mut produced = Vec::new();
    let mut i = 0_u64;
    while !stop.load(AtomicOrdering::SeqCst) {
        let key_index = i % KEYS;
        let key = format!("k{key_index}");
        let id = format!("e-{i}");
        let partition = i32::try_from(key_index % 2).expect("0 or 1");
        let payload = envelope(&id, &key, i / KEYS);
        let delivery = producer
            .send(
                FutureRecord::to(&topic)
                    .key(&key)
                    .partition(partition)
                    .payload(&payload),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("produced");
        produced.push((id, delivery.partition, delivery.offset));
        i += 1;
        tokio::time::sleep(PRODUCE_EVERY).await;
    }
    produced
}

/// Aborts the producing task if the test fails first (its topic is deleted on the way out).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Waits until `done` holds for the target's answered requests, or panics after [`WAIT`].
async fn wait_requests(target: &Target, what: &str, done: impl Fn(&[Received]) -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done(&target.requests()) {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How many requests for event `id` worker `path` (`/a`, `/b`) sent and got answered.
fn answered(log: &[Received], path: &str, id: &str) -> usize {
    log.iter()
        .filter(|r| r.id == id && r.path.ends_with(path))
        .count()
}

/// When each (partition, offset) was first answered 2xx, from the target's log.
fn first_success(log: &[Received]) -> HashMap<(i32, i64), Instant> {
    let mut first: HashMap<(i32, i64), Instant> = HashMap::new();
    for r in log.iter().filter(|r| (200..300).contains(&r.status)) {
        let (Some(p), Some(o)) = (r.partition, r.offset) else {
            panic!("a request without ferry-partition/ferry-offset: {r:?}");
        };
        first
            .entry((p, o))
            .and_modify(|t| *t = (*t).min(r.answered))
            .or_insert(r.answered);
    }
    first
}

/// Every sample: a committed offset C of partition p means every record of p below C had been
/// answered 2xx before the sample was read.
fn assert_commits_follow_successes(
    samples: &[CommitSample],
    produced: &[Produced],
    log: &[Received],
) {
    let first = first_success(log);
    // Every produced offset, per partition, in order.
    let mut by_partition: HashMap<i32, Vec<i64>> = HashMap::new();
    for (_, p, o) in produced {
        by_partition.entry(*p).or_default().push(*o);
    }
    for (p, offsets) in &mut by_partition {
        offsets.sort_unstable();
        for sample in samples {
            let Some(committed) = sample.committed[usize::try_from(*p).expect("partition")] else {
                continue;
            };
            for o in offsets.iter().take_while(|o| **o < committed) {
                match first.get(&(*p, *o)) {
                    Some(t) if *t <= sample.at => {}
                    answered => panic!(
                        "partition {p} committed at {committed} while offset {o} was not yet \
                         answered 2xx (first 2xx: {answered:?}, sample at {:?})",
                        sample.at
                    ),
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_result_of_an_old_assignment_never_commits() {
    let env = require_env!();
    let topics = Topics::create(env, 2, &[], true).await;
    let topic = topics.main.name.clone();
    let x_id = format!("e-{X_INDEX}");
    let next_id = format!("e-{NEXT_INDEX}");
    let wait_rule = {
        let x_id = x_id.clone();
        Arc::new(move |r: &Received| match (r.id == x_id, r.nth) {
            (true, 0) => Wait::UntilReleased,
            (true, _) => Wait::For(REDELIVERY_ANSWER_DELAY),
            (false, _) => Wait::No,
        })
    };
    let target = Target::start_with(Arc::new(|_, _| 200), wait_rule).await;
    let sampler = CommitSampler::start(env, &topics.group, &topic, 2, SAMPLE_EVERY);
    let stop_producing = Arc::new(AtomicBool::new(false));
    let mut producing = AbortOnDrop(tokio::spawn(produce_until(
        env,
        topic.clone(),
        stop_producing.clone(),
    )));

    // The range assignor orders members by member id, which the broker makes from the client
    // id: A ("a-…") gets partition 0 and B ("b-…") partition 1 while both are members.
    let a_client = unique_name("a-rebalance");
    let b_client = unique_name("b-rebalance");
    let options = |client: &str| {
        let mut extra = vec![
            "--ordering=key".to_owned(),
            "--max-in-flight=32".to_owned(),
            "--drain-timeout=1s".to_owned(),
            // Longer than the whole test: X's held request must end in the late 2xx.
            "--timeout=120s".to_owned(),
            format!("--kafka-option=client.id={client}"),
        ];
        extra.extend(GROUP_OPTIONS.iter().map(|s| (*s).to_owned()));
        extra
    };
    let (a_options, b_options) = (options(&a_client), options(&b_client));
    let a_extra: Vec<&str> = a_options.iter().map(String::as_str).collect();
    let b_extra: Vec<&str> = b_options.iter().map(String::as_str).collect();
    let (a_url, b_url) = (format!("{}/a", target.url), format!("{}/b", target.url));

    let mut a = spawn_worker(env, "rebalance-a", &topics, &a_url, &a_extra);
    wait_group(
        env,
        &topics.group,
        &topic,
        &[(&a_client, &[0, 1])],
        WAIT,
        "A alone owns both partitions",
    )
    .await;
    target.wait_held(1, WAIT).await;
    wait_requests(&target, "A delivered the event after X", |log| {
        answered(log, "/a", &next_id) >= 1
    })
    .await;
    // X's key keeps getting records, queued behind X; other keys flow until the window is full.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut b = spawn_worker(env, "rebalance-b", &topics, &b_url, &b_extra);
    // Stable again only after A's revocation returned, i.e. after its 1 s drain deadline
    // passed with X still running.
    wait_group(
        env,
        &topics.group,
        &topic,
        &[(&a_client, &[0]), (&b_client, &[1])],
        WAIT,
        "B joined: A partition 0, B partition 1",
    )
    .await;
    assert_eq!(target.held_now(), 1, "X's first request is still open");
    // Nothing commits past X, so A's second assignment of partition 0 starts at X again and
    // delivers the event after X again; B works on partition 1.
    wait_requests(&target, "A's second assignment and B both work", |log| {
        answered(log, "/a", &next_id) >= 2 && log.iter().any(|r| r.path.ends_with("/b"))
    })
    .await;

    let status = b
        .terminate(WAIT)
        .await
        .expect("stop B")
        .expect("B exits by itself on SIGTERM");
    assert!(status.success(), "B exited with {status}");
    wait_group(
        env,
        &topics.group,
        &topic,
        &[(&a_client, &[0, 1])],
        WAIT,
        "A owns both partitions again",
    )
    .await;
    // A's third assignment starts at X again too: X is in its window (queued behind X's first
    // delivery, still running, as its key's lane is busy) when the late answer arrives.
    wait_requests(&target, "A's third assignment works", |log| {
        answered(log, "/a", &next_id) >= 3
    })
    .await;
    assert_eq!(target.held_now(), 1, "X's first request is still open");

    let released = Instant::now();
    target.release_held();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop_producing.store(true, AtomicOrdering::SeqCst);
    let produced = (&mut producing.0).await.expect("producer");

    let mut ends = [None, None];
    for (_, p, o) in &produced {
        let end = &mut ends[usize::try_from(*p).expect("partition")];
        *end = Some(end.unwrap_or(0).max(o + 1));
    }
    target
        .wait_for(WAIT, "every event delivered", |d| {
            produced.iter().all(|(id, _, _)| d.contains_key(id))
        })
        .await;
    worker::wait_committed(
        env,
        &topics.group,
        &topic,
        &ends,
        "A commits to the end of every partition",
    )
    .await;
    let (samples, failures) = sampler.finish();
    a.terminate(WAIT).await.expect("stop A");

    let log = target.requests();
    let x_offset = produced
        .iter()
        .find(|(id, _, _)| *id == x_id)
        .map(|(_, p, o)| {
            assert_eq!(*p, X_PARTITION);
            *o
        })
        .expect("X produced");
    let x_requests: Vec<&Received> = log.iter().filter(|r| r.id == x_id).collect();
    // X's requests: (how many came before, worker, status, arrival after the release).
    let x_timeline: Vec<_> = x_requests
        .iter()
        .map(|r| {
            (
                r.nth,
                &r.path,
                r.status,
                r.at.checked_duration_since(released),
            )
        })
        .collect();
    eprintln!(
        "{} events, {} requests, {} samples ({failures} failed readings); X at offset \
         {x_offset}: {x_timeline:?}",
        produced.len(),
        log.len(),
        samples.len(),
    );
    assert!(
        samples.len() >= 50,
        "too few samples to check commits: {}",
        samples.len()
    );
    let late = x_requests
        .iter()
        .find(|r| r.nth == 0)
        .expect("X's first request answered");
    assert!(
        late.path.ends_with("/a") && late.status == 200 && late.answered >= released,
        "X's first request was A's and answered 2xx only on release: {late:?}"
    );

    assert_commits_follow_successes(&samples, &produced, &log);
    // The late answer moved nothing: past X only once another request of X was answered.
    let redelivered = x_requests
        .iter()
        .filter(|r| r.nth > 0 && (200..300).contains(&r.status))
        .map(|r| r.answered)
        .min();
    for sample in &samples {
        let committed = sample.committed[usize::try_from(X_PARTITION).expect("partition")];
        if committed.is_some_and(|c| c > x_offset) {
            assert!(
                redelivered.is_some_and(|t| t <= sample.at),
                "partition {X_PARTITION} committed at {committed:?}, past X ({x_offset}), on the \
                 late answer of an old assignment alone (redelivery answered: {redelivered:?}, \
                 sample at {:?}, released at {released:?})",
                sample.at
            );
        }
    }
}
