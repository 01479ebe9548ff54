//! Shared pieces of the worker's black-box tests: a real HTTP target that records what it was
//! sent, topics with chosen names (the worker's retry tiers are named after the topic and
//! group), an event producer, the real `ferry-sidecar worker` binary as a child process, and
//! readers for committed offsets, consumer-group membership and dead letters.
#![allow(dead_code)]

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering as AtomicOrdering},
    },
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode, Uri},
    routing::post,
};
use ferry_testkit::{ChildProcess, TempTopic, TestEnv, unique_name};

// The worker tests import these from here; their one home is the test kit.
#[allow(unused_imports)]
pub use ferry_testkit::Grant;
use rdkafka::{
    Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
    message::{Headers, OwnedMessage},
    producer::{FutureProducer, FutureRecord},
    util::Timeout,
};

/// One request the target received.
#[derive(Debug, Clone)]
pub struct Received {
    pub id: String,
    pub key: String,
    pub seq: u64,
    pub status: u16,
    pub headers: HashMap<String, String>,
    /// When the request arrived.
    pub at: Instant,
    /// When its answer was decided (after any wait), just before the answer was sent.
    pub answered: Instant,
    /// How many requests for this event id arrived before this one.
    pub nth: usize,
    /// The record's partition and offset, from the worker's `ferry-partition` and
    /// `ferry-offset` headers (DESIGN §5).
    pub partition: Option<i32>,
    pub offset: Option<i64>,
    /// The request path: `/events`, or `/events/<name>` to tell several workers apart.
    pub path: String,
    /// The request body as sent (the envelope's `data`).
    pub body: Bytes,
}

/// Decides the answer to each request.
pub type Behaviour = Arc<dyn Fn(&Received, usize) -> u16 + Send + Sync>;

/// How long the target waits before it answers a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Answers at once.
    No,
    /// Answers after this long.
    For(Duration),
    /// Keeps the request open until [`Target::release_held`].
    UntilReleased,
}

/// Decides the wait for each request (its `nth` says how many of its id came before).
pub type WaitRule = Arc<dyn Fn(&Received) -> Wait + Send + Sync>;

#[derive(Clone)]
struct TargetState {
    log: Arc<Mutex<Vec<Received>>>,
    seen: Arc<Mutex<HashMap<String, usize>>>,
    behaviour: Behaviour,
    wait: WaitRule,
    release: Arc<tokio::sync::watch::Sender<bool>>,
    held: Arc<AtomicUsize>,
}

/// An HTTP service on 127.0.0.1 that answers by `behaviour` and remembers every request.
pub struct Target {
    pub url: String,
    log: Arc<Mutex<Vec<Received>>>,
    release: Arc<tokio::sync::watch::Sender<bool>>,
    held: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Target {
    /// Answers 200 to everything.
    pub async fn ok() -> Target {
        Self::start(Arc::new(|_, _| 200)).await
    }

    /// Answers with `behaviour(request, how many times this id was seen before)`.
    pub async fn start(behaviour: Behaviour) -> Target {
        Self::start_with(behaviour, Arc::new(|_| Wait::No)).await
    }

    /// Answers 200 to everything after `ms` milliseconds, so deliveries overlap.
    pub async fn slow(ms: u64) -> Target {
        Self::start_with(
            Arc::new(|_, _| 200),
            Arc::new(move |_| Wait::For(Duration::from_millis(ms))),
        )
        .await
    }

    /// Answers with `behaviour` once `wait` allows: at once, after a delay, or (holding the
    /// request open) once [`Target::release_held`] was called.
    pub async fn start_with(behaviour: Behaviour, wait: WaitRule) -> Target {
        let log = Arc::new(Mutex::new(Vec::new()));
        let release = Arc::new(tokio::sync::watch::Sender::new(false));
        let held = Arc::new(AtomicUsize::new(0));
        let state = TargetState {
            log: log.clone(),
            seen: Arc::default(),
            behaviour,
            wait,
            release: release.clone(),
            held: held.clone(),
        };
        let app = Router::new()
            .route("/events", post(receive))
            .route("/events/{name}", post(receive))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind target");
        let addr = listener.local_addr().expect("address");
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("target serves");
        });
        Target {
            url: format!("http://{addr}/events"),
            log,
            release,
            held,
            task,
        }
    }

    /// Answers every request held by [`Wait::UntilReleased`], now and later.
    pub fn release_held(&self) {
        self.release.send_replace(true);
    }

    /// How many requests are held open right now.
    pub fn held_now(&self) -> usize {
        self.held.load(AtomicOrdering::SeqCst)
    }

    /// Waits until `n` requests are held open, or panics after `timeout`.
    pub async fn wait_held(&self, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.held_now() < n {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {n} held requests: {} held",
                self.held_now()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Received> {
        self.log.lock().expect("log").clone()
    }

    /// How many 2xx answers each id got.
    pub fn delivered(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for r in self.log.lock().expect("log").iter() {
            if (200..300).contains(&r.status) {
                *counts.entry(r.id.clone()).or_default() += 1;
            }
        }
        counts
    }

    /// Waits until `done(delivered)` holds, or panics after `timeout`.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        what: &str,
        done: impl Fn(&HashMap<String, usize>) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        loop {
            let delivered = self.delivered();
            if done(&delivered) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {} distinct ids delivered",
                delivered.len()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Counts a held request while it is open, also if hyper drops the handler.
struct HeldGuard(Arc<AtomicUsize>);

impl Drop for HeldGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, AtomicOrdering::SeqCst);
    }
}

async fn receive(
    State(state): State<TargetState>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let data: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let id = header(&headers, "ce-id");
    let nth = {
        let mut seen = state.seen.lock().expect("seen");
        let count = seen.entry(id.clone()).or_default();
        *count += 1;
        *count - 1
    };
    let now = Instant::now();
    let mut r = Received {
        id,
        key: data["key"].as_str().unwrap_or_default().to_owned(),
        seq: data["seq"].as_u64().unwrap_or_default(),
        status: 0,
        partition: header(&headers, "ferry-partition").parse().ok(),
        offset: header(&headers, "ferry-offset").parse().ok(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_owned()))
            .collect(),
        at: now,
        answered: now,
        nth,
        path: uri.path().to_owned(),
        body,
    };
    match (state.wait)(&r) {
        Wait::No => {}
        Wait::For(d) => tokio::time::sleep(d).await,
        Wait::UntilReleased => {
            let mut release = state.release.subscribe();
            state.held.fetch_add(1, AtomicOrdering::SeqCst);
            let _held = HeldGuard(state.held.clone());
            // Err only if the sender is gone, i.e. the target is dropped: answer then.
            let _ = release.wait_for(|released| *released).await;
        }
    }
    let mut log = state.log.lock().expect("log");
    r.status = (state.behaviour)(&r, nth);
    r.answered = Instant::now();
    let status = StatusCode::from_u16(r.status).expect("valid status");
    log.push(r);
    status
}

fn header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// A main topic with its tiers and dead-letter topic, all named for one test.
pub struct Topics {
    pub main: TempTopic,
    pub tiers: Vec<TempTopic>,
    pub dead_letter: Option<TempTopic>,
    pub group: String,
    pub delays: Vec<String>,
    pub dead_letter_name: String,
}

impl Topics {
    /// `partitions` partitions each; tiers for `delays`; the dead-letter topic if `with_dlq`.
    pub async fn create(env: &TestEnv, partitions: i32, delays: &[&str], with_dlq: bool) -> Topics {
        let main = TempTopic::create_named(env, &unique_name("wk"), partitions)
            .await
            .expect("main topic");
        let group = unique_name("g");
        let mut tiers = Vec::new();
        for d in delays {
            let tier = format!("{}.{group}.retry.{d}", main.name);
            tiers.push(
                TempTopic::create_named(env, &tier, partitions)
                    .await
                    .expect("tier topic"),
            );
        }
        let dead_letter_name = format!("{}.dlq", main.name);
        let dead_letter = if with_dlq {
            Some(
                TempTopic::create_named(env, &dead_letter_name, 1)
                    .await
                    .expect("dead-letter topic"),
            )
        } else {
            None
        };
        Topics {
            main,
            tiers,
            dead_letter,
            group,
            delays: delays.iter().map(|d| (*d).to_owned()).collect(),
            dead_letter_name,
        }
    }
}

/// An event envelope whose data carries its key and sequence number within the key.
pub fn envelope(id: &str, key: &str, seq: u64) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schema": "test.v1", "event": "test.happened", "id": id, "ts": 1_700_000_000,
        "key": key, "data": {"key": key, "seq": seq}, "headers": {}
    }))
    .expect("json")
}

/// A producer as the admin (acks=all, idempotent).
pub fn producer(env: &TestEnv) -> FutureProducer {
    env.kafka_config()
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .expect("producer")
}

/// Produces one record and waits for its acknowledgement.
pub async fn produce(producer: &FutureProducer, topic: &str, key: &str, payload: &[u8]) {
    producer
        .send(
            FutureRecord::to(topic).key(key).payload(payload),
            Timeout::After(Duration::from_secs(30)),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("produced");
}

/// Produces `n` events over `keys` keys, ids `<prefix>-<i>`, enqueued in order (so in order
/// per key: the producer is idempotent) and all acknowledged before this returns.
pub async fn produce_events(
    env: &TestEnv,
    topic: &str,
    prefix: &str,
    n: u64,
    keys: u64,
) -> Vec<String> {
    let producer = producer(env);
    let mut ids = Vec::with_capacity(usize::try_from(n).expect("fits"));
    let mut pending = std::collections::VecDeque::new();
    for i in 0..n {
        let key = format!("k{}", i % keys);
        let id = format!("{prefix}-{i}");
        let payload = envelope(&id, &key, i / keys);
        loop {
            match producer.send_result(FutureRecord::to(topic).key(&key).payload(&payload)) {
                Ok(delivery) => {
                    pending.push_back(delivery);
                    break;
                }
                Err((e, _)) => {
                    assert!(
                        matches!(
                            e,
                            rdkafka::error::KafkaError::MessageProduction(
                                rdkafka::types::RDKafkaErrorCode::QueueFull
                            )
                        ),
                        "produce failed: {e}"
                    );
                    let oldest = pending.pop_front().expect("a full queue has pending sends");
                    oldest
                        .await
                        .expect("not cancelled")
                        .map_err(|(e, _)| e)
                        .expect("produced");
                }
            }
        }
        ids.push(id);
    }
    for delivery in pending {
        delivery
            .await
            .expect("not cancelled")
            .map_err(|(e, _)| e)
            .expect("produced");
    }
    ids
}

/// Starts the real worker binary; `extra` flags are appended.
pub fn spawn_worker(
    env: &TestEnv,
    name: &str,
    topics: &Topics,
    target: &str,
    extra: &[&str],
) -> ChildProcess {
    spawn_worker_with(env.kafka_args(), name, topics, target, extra)
}

/// Starts the real worker binary as Kafka user `user` (not the admin, so ACLs apply).
pub fn spawn_worker_as(
    (user, password): (&str, &str),
    env: &TestEnv,
    name: &str,
    topics: &Topics,
    target: &str,
    extra: &[&str],
) -> ChildProcess {
    spawn_worker_with(
        env.kafka_args_as(user, password),
        name,
        topics,
        target,
        extra,
    )
}

fn spawn_worker_with(
    kafka: ferry_common::kafka::KafkaArgs,
    name: &str,
    topics: &Topics,
    target: &str,
    extra: &[&str],
) -> ChildProcess {
    let delays = topics.delays.join(",");
    let mut args = vec![
        "worker".to_owned(),
        format!("--topics={}", topics.main.name),
        format!("--group={}", topics.group),
        format!("--target-url={target}"),
        format!("--dead-letter-topic={}", topics.dead_letter_name),
        worker_log_level().to_owned(),
    ];
    if !delays.is_empty() {
        args.push(format!("--retry-delays={delays}"));
    }
    // A free port unless the test asks for one (it reads the worker's /metrics then).
    if !extra.iter().any(|a| a.starts_with("--metrics-addr")) {
        args.push("--metrics-addr=127.0.0.1:0".to_owned());
    }
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let kafka_env = kafka.to_env();
    let envs: Vec<(&str, &str)> = kafka_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    ChildProcess::spawn(name, env!("CARGO_BIN_EXE_ferry-sidecar"), &args, &envs)
        .expect("spawn worker")
}

/// The worker's log level in tests: its debug lines (a line per delivery, the run loop's state
/// every second) only when `FERRY_TEST_LOGS` sends child output to files; otherwise the output
/// goes to the test's own (CI's) log, where debug made ~18 MB per run.
fn worker_log_level() -> &'static str {
    if std::env::var_os("FERRY_TEST_LOGS").is_some() {
        "--log-level=info,ferry_sidecar=debug"
    } else {
        "--log-level=info"
    }
}

/// Waits up to 30 s until `group` has committed `expected` on `topic`'s partitions; `what`
/// says in the failure what did not happen.
pub async fn wait_committed(
    env: &TestEnv,
    group: &str,
    topic: &str,
    expected: &[Option<i64>],
    what: &str,
) {
    let partitions = i32::try_from(expected.len()).expect("few partitions");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let committed = committed(env, group, topic, partitions);
        if committed == expected {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {committed:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// A consumer of `group` (it never joins: it only asks the coordinator) and the list of
/// `topic`'s partitions, to read the group's committed offsets with.
fn offsets_reader(
    env: &TestEnv,
    group: &str,
    topic: &str,
    partitions: i32,
) -> (BaseConsumer, TopicPartitionList) {
    let consumer: BaseConsumer = env
        .kafka_config()
        .set("group.id", group)
        .create()
        .expect("consumer");
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition(topic, p);
    }
    (consumer, list)
}

/// The group's committed offset of each partition of `topic` (`None`: nothing committed).
pub fn committed(env: &TestEnv, group: &str, topic: &str, partitions: i32) -> Vec<Option<i64>> {
    let (consumer, list) = offsets_reader(env, group, topic, partitions);
    let committed = consumer
        .committed_offsets(list, Duration::from_secs(30))
        .expect("committed offsets");
    (0..partitions)
        .map(
            |p| match committed.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => Some(o),
                _ => None,
            },
        )
        .collect()
}

/// The group's committed offsets at one moment.
#[derive(Debug, Clone)]
pub struct CommitSample {
    /// When the reading returned: every commit it shows happened before this.
    pub at: Instant,
    /// The committed offset of each partition (`None`: nothing committed).
    pub committed: Vec<Option<i64>>,
}

/// Reads a group's committed offsets every `every` on a thread of its own, with one consumer
/// (a new consumer per reading would take a SASL handshake each time), until finished.
pub struct CommitSampler {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<(Vec<CommitSample>, usize)>>,
}

impl CommitSampler {
    /// Starts sampling `group`'s offsets of `topic`'s `partitions` partitions.
    pub fn start(
        env: &TestEnv,
        group: &str,
        topic: &str,
        partitions: i32,
        every: Duration,
    ) -> CommitSampler {
        let (consumer, list) = offsets_reader(env, group, topic, partitions);
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let topic = topic.to_owned();
        let thread = std::thread::spawn(move || {
            let (mut samples, mut failures) = (Vec::new(), 0);
            while !stopped.load(AtomicOrdering::SeqCst) {
                match consumer.committed_offsets(list.clone(), Duration::from_secs(5)) {
                    Ok(offsets) => samples.push(CommitSample {
                        at: Instant::now(),
                        committed: (0..partitions)
                            .map(
                                |p| match offsets.find_partition(&topic, p).map(|e| e.offset()) {
                                    Some(Offset::Offset(o)) => Some(o),
                                    _ => None,
                                },
                            )
                            .collect(),
                    }),
                    Err(_) => failures += 1,
                }
                std::thread::sleep(every);
            }
            (samples, failures)
        });
        CommitSampler {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops sampling; every sample taken, and how many readings failed.
    pub fn finish(mut self) -> (Vec<CommitSample>, usize) {
        self.stop.store(true, AtomicOrdering::SeqCst);
        self.thread
            .take()
            .expect("running")
            .join()
            .expect("sampler thread")
    }
}

impl Drop for CommitSampler {
    fn drop(&mut self) {
        self.stop.store(true, AtomicOrdering::SeqCst);
    }
}

/// A consumer group as the broker describes it: its state and each member's client id with
/// the partitions of one topic assigned to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupState {
    pub state: String,
    pub members: Vec<(String, Vec<i32>)>,
}

/// Describes `group` (ListGroups/DescribeGroups), with each member's partitions of `topic`;
/// `None` if the broker did not answer.
pub fn describe_group(env: &TestEnv, group: &str, topic: &str) -> Option<GroupState> {
    let consumer: BaseConsumer = env.kafka_config().create().expect("consumer");
    let list = consumer
        .fetch_group_list(Some(group), Duration::from_secs(5))
        .ok()?;
    let info = list.groups().iter().find(|g| g.name() == group)?;
    let mut members: Vec<(String, Vec<i32>)> = info
        .members()
        .iter()
        .map(|m| {
            let partitions = m
                .assignment()
                .map(|bytes| assigned_partitions(bytes, topic))
                .unwrap_or_default();
            (m.client_id().to_owned(), partitions)
        })
        .collect();
    members.sort();
    Some(GroupState {
        state: info.state().to_owned(),
        members,
    })
}

/// Waits up to `timeout` until `group` is `Stable` with members as `expected` (client id,
/// partitions of `topic`; sorted by client id); `what` says in the failure what did not happen.
pub async fn wait_group(
    env: &TestEnv,
    group: &str,
    topic: &str,
    expected: &[(&str, &[i32])],
    timeout: Duration,
    what: &str,
) {
    let expected = GroupState {
        state: "Stable".to_owned(),
        members: expected
            .iter()
            .map(|(id, ps)| ((*id).to_owned(), ps.to_vec()))
            .collect(),
    };
    let deadline = Instant::now() + timeout;
    loop {
        let described = describe_group(env, group, topic);
        if described.as_ref() == Some(&expected) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: group is {described:?}, expected {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The partitions of `topic` in a consumer-protocol assignment (Kafka's
/// `ConsumerProtocolAssignment`: version, then [topic, [partition]], then user data).
fn assigned_partitions(bytes: &[u8], topic: &str) -> Vec<i32> {
    struct Reader<'a>(&'a [u8]);
    impl Reader<'_> {
        fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
            let (head, rest) = self.0.split_first_chunk::<N>()?;
            self.0 = rest;
            Some(*head)
        }
        fn i16(&mut self) -> Option<i16> {
            self.take::<2>().map(i16::from_be_bytes)
        }
        fn i32(&mut self) -> Option<i32> {
            self.take::<4>().map(i32::from_be_bytes)
        }
        fn string(&mut self) -> Option<String> {
            let len = usize::try_from(self.i16()?).ok()?;
            let (s, rest) = self.0.split_at_checked(len)?;
            self.0 = rest;
            Some(String::from_utf8_lossy(s).into_owned())
        }
    }
    let mut r = Reader(bytes);
    let mut found = Vec::new();
    let parsed = (|| {
        r.i16()?;
        for _ in 0..r.i32()? {
            let name = r.string()?;
            for _ in 0..r.i32()? {
                let p = r.i32()?;
                if name == topic {
                    found.push(p);
                }
            }
        }
        Some(())
    })();
    assert!(parsed.is_some(), "malformed member assignment {bytes:?}");
    found.sort_unstable();
    found
}

/// Reads every record of `topic` from the start until `n` were read or `timeout` passed.
pub fn read_all(env: &TestEnv, topic: &str, n: usize, timeout: Duration) -> Vec<OwnedMessage> {
    let consumer: BaseConsumer = env
        .kafka_config()
        .set("group.id", unique_name("reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while out.len() < n && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            out.push(m.detach());
        }
    }
    out
}

/// A header of a record as text.
pub fn header_of(message: &OwnedMessage, name: &str) -> Option<String> {
    message
        .headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}
