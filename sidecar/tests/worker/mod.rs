//! Shared pieces of the worker's black-box tests: a real HTTP target that records what it was
//! sent, topics with chosen names (the worker's retry tiers are named after the topic and
//! group), an event producer, the real `ferry-sidecar worker` binary as a child process, and
//! readers for committed offsets and dead letters.
#![allow(dead_code)]

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{Router, body::Bytes, extract::State, http::HeaderMap, http::StatusCode, routing::post};
use ferry_operator::kafka::{
    KafkaAdmin,
    acls::{AclBinding, Operation, ResourceType},
};
use ferry_testkit::{ChildProcess, TestEnv, run_to_completion, unique_name};
use rdkafka::{
    ClientConfig, Message, Offset, TopicPartitionList,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
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
    pub at: Instant,
}

/// Decides the answer to each request.
pub type Behaviour = Arc<dyn Fn(&Received, usize) -> u16 + Send + Sync>;

#[derive(Clone)]
struct TargetState {
    log: Arc<Mutex<Vec<Received>>>,
    seen: Arc<Mutex<HashMap<String, usize>>>,
    behaviour: Behaviour,
    sleep_ms: Option<u64>,
}

/// An HTTP service on 127.0.0.1 that answers by `behaviour` and remembers every request.
pub struct Target {
    pub url: String,
    log: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Target {
    /// Answers 200 to everything.
    pub async fn ok() -> Target {
        Self::start(Arc::new(|_, _| 200)).await
    }

    /// Answers with `behaviour(request, how many times this id was seen before)`.
    pub async fn start(behaviour: Behaviour) -> Target {
        Self::start_with_sleep(behaviour, None).await
    }

    /// Answers 200 to everything after `ms` milliseconds, so deliveries overlap.
    pub async fn slow(ms: u64) -> Target {
        Self::start_with_sleep(Arc::new(|_, _| 200), Some(ms)).await
    }

    async fn start_with_sleep(behaviour: Behaviour, sleep_ms: Option<u64>) -> Target {
        let log = Arc::new(Mutex::new(Vec::new()));
        let state = TargetState {
            log: log.clone(),
            seen: Arc::default(),
            behaviour,
            sleep_ms,
        };
        let app = Router::new()
            .route("/events", post(receive))
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
            task,
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

async fn receive(State(state): State<TargetState>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let data: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let mut r = Received {
        id: header(&headers, "ce-id"),
        key: data["key"].as_str().unwrap_or_default().to_owned(),
        seq: data["seq"].as_u64().unwrap_or_default(),
        status: 0,
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_owned()))
            .collect(),
        at: Instant::now(),
    };
    if let Some(ms) = state.sleep_ms {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let seen = {
        let mut seen = state.seen.lock().expect("seen");
        let count = seen.entry(r.id.clone()).or_default();
        *count += 1;
        *count - 1
    };
    let mut log = state.log.lock().expect("log");
    r.status = (state.behaviour)(&r, seen);
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

/// A topic with a chosen name, deleted when dropped.
pub struct NamedTopic {
    pub name: String,
    config: ClientConfig,
}

impl NamedTopic {
    /// Creates `name` with `partitions` partitions.
    pub async fn create(env: &TestEnv, name: &str, partitions: i32) -> NamedTopic {
        let config = env.kafka_config();
        let admin: AdminClient<DefaultClientContext> = config.create().expect("admin");
        let results = admin
            .create_topics(
                &[NewTopic::new(name, partitions, TopicReplication::Fixed(1))],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
            )
            .await
            .expect("create topics");
        for r in results {
            r.expect("topic created");
        }
        NamedTopic {
            name: name.to_owned(),
            config,
        }
    }
}

impl Drop for NamedTopic {
    fn drop(&mut self) {
        let name = self.name.clone();
        let config = self.config.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                if let Ok(admin) = config.create::<AdminClient<DefaultClientContext>>() {
                    let _ = admin.delete_topics(&[&name], &AdminOptions::new()).await;
                }
            });
        })
        .join()
        .expect("clean-up thread");
    }
}

/// A main topic with its tiers and dead-letter topic, all named for one test.
pub struct Topics {
    pub main: NamedTopic,
    pub tiers: Vec<NamedTopic>,
    pub dead_letter: Option<NamedTopic>,
    pub group: String,
    pub delays: Vec<String>,
    pub dead_letter_name: String,
}

impl Topics {
    /// `partitions` partitions each; tiers for `delays`; the dead-letter topic if `with_dlq`.
    pub async fn create(env: &TestEnv, partitions: i32, delays: &[&str], with_dlq: bool) -> Topics {
        let main = NamedTopic::create(env, &unique_name("wk"), partitions).await;
        let group = unique_name("g");
        let mut tiers = Vec::new();
        for d in delays {
            tiers.push(
                NamedTopic::create(env, &format!("{}.{group}.retry.{d}", main.name), partitions)
                    .await,
            );
        }
        let dead_letter_name = format!("{}.dlq", main.name);
        let dead_letter = if with_dlq {
            Some(NamedTopic::create(env, &dead_letter_name, 1).await)
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
        "--metrics-addr=127.0.0.1:0".to_owned(),
        "--log-level=info,ferry_sidecar=debug".to_owned(),
    ];
    if !delays.is_empty() {
        args.push(format!("--retry-delays={delays}"));
    }
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let kafka_env = kafka.to_env();
    let envs: Vec<(&str, &str)> = kafka_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    ChildProcess::spawn(name, env!("CARGO_BIN_EXE_ferry-sidecar"), &args, &envs)
        .expect("spawn worker")
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

/// The group's committed offset of each partition of `topic` (`None`: nothing committed).
pub fn committed(env: &TestEnv, group: &str, topic: &str, partitions: i32) -> Vec<Option<i64>> {
    let consumer: BaseConsumer = env
        .kafka_config()
        .set("group.id", group)
        .create()
        .expect("consumer");
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition(topic, p);
    }
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

/// Literal ALLOW ACLs for `User:<user>`, granted for one test and revoked when dropped.
pub struct Grant {
    config: ClientConfig,
    bindings: Vec<AclBinding>,
}

impl Grant {
    /// Grants `User:<user>` each `(resource type, name, operation)`.
    pub async fn allow(
        env: &TestEnv,
        user: &str,
        acls: &[(ResourceType, &str, Operation)],
    ) -> Grant {
        let principal = format!("User:{user}");
        let bindings: Vec<AclBinding> = acls
            .iter()
            .map(|(kind, name, op)| AclBinding::allow(&principal, *kind, *name, *op))
            .collect();
        let config = env.kafka_config();
        KafkaAdmin::new(&config, Duration::from_secs(30))
            .expect("admin client")
            .create_acls(&bindings)
            .await
            .expect("ACLs granted");
        Grant { config, bindings }
    }
}

impl Drop for Grant {
    fn drop(&mut self) {
        let (config, bindings) = (self.config.clone(), std::mem::take(&mut self.bindings));
        run_to_completion(async move {
            let revoked = match KafkaAdmin::new(&config, Duration::from_secs(30)) {
                Ok(admin) => admin.delete_acls(&bindings).await.map(|_| ()),
                Err(e) => Err(e),
            };
            if let Err(e) = revoked {
                eprintln!("cannot revoke test ACLs {bindings:?}: {e}");
            }
        });
    }
}
