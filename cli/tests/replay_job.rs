//! `kubectl ferry dlq replay` through the operator (issue #18): the plugin creates an
//! EventReplay, the real `ferry-operator` makes a principal of its own for it, its
//! ServiceAccount and Role, and a Job; the Job's container (`ferry-sidecar dlq-replay`, started
//! here as a local process from the Job's own pod template, since KWOK runs no containers, with
//! the Job ServiceAccount's identity) replays and reports into the EventReplay's status; the
//! plugin prints it. Events that a real worker dead-lettered while its target answered 422 are
//! replayed after the target is fixed: the replay principal can read no topic but the
//! dead-letter topic (the broker refuses), a dry run changes nothing, a replay delivers each
//! selected event once, a second replays nothing, `--again` replays them but the worker's
//! de-duplication prevents a second effect, and the principal is gone once the replay is over.

mod support;

use std::{collections::BTreeSet, process::Stdio, time::Duration};

use ferry_operator::{
    api::{ConditionStatus, EventConsumer, EventReplay, EventTopic, ReplayPhase},
    kafka::{KafkaAdmin, acls::Operation},
};
use ferry_testkit::{
    ChildProcess, TempNamespace, TempPath, TempSchema, TestEnv, free_port, pod_env, require_env,
    wait_for,
};
use k8s_openapi::api::{
    batch::v1::Job,
    core::v1::{ConfigMap, Secret},
    events::v1::Event,
};
use kube::{
    Api, ResourceExt,
    api::{ListParams, PostParams},
    config::Kubeconfig,
};
use rdkafka::{
    Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
    error::{KafkaError, RDKafkaErrorCode},
};
use serde_json::json;
use support::{
    CONSUMER, DELAY, SERVICE_ACCOUNT, TOPIC, Target, admin_producer, envelope, install_crds,
    produce, workspace_binary,
};

const WITHIN: Duration = Duration::from_secs(120);

/// The environment's kubeconfig, impersonating ServiceAccount `sa` of `ns` (what the Job's pod
/// would be): the replay process gets exactly that ServiceAccount's RBAC.
/// It holds the environment's client key: removed when the caller drops it.
fn kubeconfig_as(env: &TestEnv, ns: &str, sa: &str) -> TempPath {
    let mut config = Kubeconfig::read_from(env.kubeconfig()).expect("kubeconfig");
    for named in &mut config.auth_infos {
        if let Some(auth) = named.auth_info.as_mut() {
            auth.impersonate = Some(format!("system:serviceaccount:{ns}:{sa}"));
            auth.impersonate_groups = Some(vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{ns}"),
                "system:authenticated".into(),
            ]);
        }
    }
    let path = TempPath::new(&format!("kubeconfig-{ns}-{sa}"));
    std::fs::write(
        &*path,
        serde_json::to_vec(&config).expect("kubeconfig JSON"),
    )
    .expect("kubeconfig written");
    path
}

/// Reads `topic` partition 0 as `config` until Kafka answers: `Ok` with a record, or the
/// error it refused with (for a topic the principal may not even describe, the broker refuses
/// its metadata already; librdkafka then never fetches).
fn read_once(config: &rdkafka::ClientConfig, topic: &str, group: &str) -> Result<(), KafkaError> {
    let consumer: BaseConsumer = config
        .clone()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(30))
        .expect("metadata");
    if let Some(e) = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .and_then(|t| t.error())
    {
        return Err(KafkaError::MetadataFetch(e.into()));
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .expect("partition");
    consumer.assign(&tpl).expect("assign");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(_)) => return Ok(()),
            Some(Err(e)) => return Err(e),
            None => {}
        }
    }
    panic!("no answer from Kafka reading {topic} within 30 s");
}

/// Whether `group` committed every record of partition 0 of `topic` (the worker finished).
fn all_committed(env: &TestEnv, group: &str, topic: &str) -> bool {
    let consumer: BaseConsumer = env
        .kafka_config()
        .set("group.id", group)
        .create()
        .expect("consumer");
    let Ok((_, high)) = consumer.fetch_watermarks(topic, 0, Duration::from_secs(10)) else {
        return false;
    };
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, 0);
    let Ok(committed) = consumer.committed_offsets(tpl, Duration::from_secs(10)) else {
        return false;
    };
    committed
        .elements()
        .iter()
        .all(|e| matches!(e.offset(), Offset::Offset(o) if o >= high))
}

/// Waits until an Event with `reason` about the object `name` is in `namespace`.
async fn wait_for_event(client: &kube::Client, namespace: &str, reason: &str, name: &str) {
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    wait_for(&format!("the {reason} Event"), WITHIN, || async {
        events
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .find(|e| {
                e.reason.as_deref() == Some(reason)
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
            })
    })
    .await;
}

fn refused(result: Result<(), KafkaError>) -> bool {
    matches!(
        result,
        Err(ref e) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::TopicAuthorizationFailed)
    )
}

struct Scene {
    env: &'static TestEnv,
    ns: TempNamespace,
    dead_letter: String,
    tier: String,
    source: String,
}

impl Scene {
    /// Runs `kubectl ferry <args>` and, meanwhile, the Job the operator makes for it; `before_job` looks at the replay's principal while it exists. Returns stdout.
    async fn replay(&self, args: &[&str], before_job: impl AsyncFnOnce(&Job)) -> String {
        let ns = self.ns.name();
        let client = self.ns.client();
        let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
        let known: BTreeSet<String> = jobs
            .list(&ListParams::default())
            .await
            .expect("jobs")
            .items
            .iter()
            .map(|j| j.name_any())
            .collect();
        let plugin = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubectl-ferry"))
            .args(args)
            .args(["-n", ns, "--timeout", "3m"])
            .env("KUBECONFIG", self.env.kubeconfig())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("kubectl-ferry runs");
        let job = wait_for("the operator's replay Job", WITHIN, || async {
            jobs.list(&ListParams::default())
                .await
                .ok()?
                .items
                .into_iter()
                .find(|j| !known.contains(&j.name_any()))
        })
        .await;
        before_job(&job).await;
        let template = job.spec.as_ref().expect("job spec").template.clone();
        let pod = template.metadata.clone().unwrap_or_default();
        let spec = template.spec.expect("pod spec");
        let container = &spec.containers[0];
        let resolved = pod_env::resolve(&client, ns, &pod, container)
            .await
            .expect("the Job's container resolves");
        assert_eq!(resolved.argv[0], "dlq-replay", "{:?}", resolved.argv);
        let sa = spec
            .service_account_name
            .clone()
            .expect("its ServiceAccount");
        let kubeconfig = kubeconfig_as(self.env, ns, &sa);
        let mut vars: Vec<(String, String)> = resolved.env.clone();
        vars.push(("KUBECONFIG".into(), kubeconfig.display().to_string()));
        vars.push(("FERRY_LOG_FORMAT".into(), "text".into()));
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let argv: Vec<&str> = resolved.argv.iter().map(String::as_str).collect();
        let mut process = ChildProcess::spawn(
            "replay-job",
            workspace_binary("ferry-sidecar"),
            &argv,
            &vars,
        )
        .expect("the Job's process");
        let status = process.wait().await.expect("the Job's process ends");
        let out = plugin.wait_with_output().await.expect("kubectl-ferry ends");
        assert!(
            out.status.success() && status.success(),
            "kubectl-ferry {args:?} (job {status}): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    }

    fn high_watermark(&self, topic: &str) -> i64 {
        let reader: BaseConsumer = self.env.kafka_config().create().expect("reader");
        reader
            .fetch_watermarks(topic, 0, Duration::from_secs(10))
            .expect("watermarks")
            .1
    }
}

/// A namespace with an EventTopic, an EventConsumer with retry `delays`, and the real
/// operator for it (with `extra` flags); returns once the consumer's topics and access are made.
async fn operated(
    env: &'static TestEnv,
    delays: &[&str],
    extra: &[&str],
) -> (
    TempNamespace,
    ChildProcess,
    Api<EventConsumer>,
    Api<EventTopic>,
    ferry_operator::api::ConsumerTopics,
) {
    let ns = TempNamespace::create(env).await.expect("namespace");
    let client = ns.client();
    install_crds(&client).await;
    let kafka_topic = format!("{}.orders", ns.name());
    let topics: Api<EventTopic> = Api::namespaced(client.clone(), ns.name());
    let topic: EventTopic = serde_json::from_value(json!({
        "apiVersion": "ferry.dev/v1alpha1", "kind": "EventTopic",
        "metadata": {"name": TOPIC},
        "spec": {"topicName": kafka_topic, "partitions": 1, "deletionPolicy": "Delete",
                 "producers": [{"serviceAccount": "order-service"}]},
    }))
    .expect("EventTopic");
    topics
        .create(&PostParams::default(), &topic)
        .await
        .expect("EventTopic");
    let consumers: Api<EventConsumer> = Api::namespaced(client.clone(), ns.name());
    let consumer: EventConsumer = serde_json::from_value(json!({
        "apiVersion": "ferry.dev/v1alpha1", "kind": "EventConsumer",
        "metadata": {"name": CONSUMER},
        "spec": {"topics": [TOPIC], "serviceAccount": SERVICE_ACCOUNT,
                 "delivery": {"http": {"url": "http://127.0.0.1:1/"}},
                 "retry": {"delays": delays}},
    }))
    .expect("EventConsumer");
    consumers
        .create(&PostParams::default(), &consumer)
        .await
        .expect("EventConsumer");

    let metrics = format!("127.0.0.1:{}", free_port());
    let mut args = vec![
        "run",
        "--namespace",
        ns.name(),
        "--lease-namespace",
        ns.name(),
        "--metrics-addr",
        &metrics,
        "--kubeconfig",
        env.kubeconfig(),
        "--log-format",
        "text",
    ];
    args.extend_from_slice(extra);
    let mut vars = env.kafka_args().to_env();
    vars.push(("FERRY_POD_NAME", "kubectl-ferry-replay-test".to_owned()));
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let operator =
        ChildProcess::spawn("operator", workspace_binary("ferry-operator"), &args, &vars)
            .expect("operator");
    let want_tiers = !delays.is_empty();
    let status = wait_for("the consumer's topics and access", WITHIN, || async {
        let c = consumers.get(CONSUMER).await.ok()?;
        let s = c.status?;
        let granted = s
            .conditions
            .iter()
            .any(|c| c.type_ == "AccessGranted" && c.status == ConditionStatus::True);
        let topics = s.topics?;
        (granted && topics.dead_letter.is_some() && topics.retry.is_empty() != want_tiers)
            .then_some(topics)
    })
    .await;
    (ns, operator, consumers, topics, status)
}

/// Deletes what the operator made (through its finalizers) and stops it.
async fn tear_down(
    ns: &TempNamespace,
    mut operator: ChildProcess,
    consumers: &Api<EventConsumer>,
    topics: &Api<EventTopic>,
) {
    let replays: Api<EventReplay> = Api::namespaced(ns.client(), ns.name());
    let _ = consumers.delete(CONSUMER, &Default::default()).await;
    let _ = topics.delete(TOPIC, &Default::default()).await;
    if let Ok(list) = replays.list(&ListParams::default()).await {
        for r in list.items {
            let _ = replays.delete(&r.name_any(), &Default::default()).await;
        }
    }
    let _ = wait_for("the operator's cleanup", WITHIN, || async {
        let gone = consumers.get_opt(CONSUMER).await.ok()?.is_none()
            && replays
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .is_empty();
        gone.then_some(())
    })
    .await;
    let _ = operator.terminate(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_runs_in_the_cluster_under_its_own_least_privileged_principal() {
    let env = require_env!();
    let (ns, operator, consumers, topics, status) = operated(env, &[DELAY], &[]).await;
    let client = ns.client();
    let kafka_topic = format!("{}.orders", ns.name());
    let scene = Scene {
        env,
        dead_letter: status.dead_letter.clone().expect("dead-letter topic"),
        tier: status.retry[0].clone(),
        source: kafka_topic.clone(),
        ns,
    };
    let group = format!("{}.{CONSUMER}", scene.ns.name());
    // The real worker, as the consumer's own principal (the operator's Secret), delivering to
    // a target that refuses with 422 until it is fixed: its events are dead-lettered for real.
    let database = TempSchema::create(env).await.expect("schema");
    let target = Target::start(422).await;
    let credential: Api<Secret> = Api::namespaced(client.clone(), scene.ns.name());
    let credential = credential
        .get(&format!("ferry-kafka-{SERVICE_ACCOUNT}"))
        .await
        .expect("the consumer's credential")
        .data
        .expect("data");
    let field = |k: &str| String::from_utf8(credential[k].0.clone()).expect("utf-8");
    let worker_args = [
        "worker".to_owned(),
        format!("--topics={kafka_topic}"),
        format!("--group={group}"),
        format!("--target-url={}", target.url),
        format!("--dead-letter-topic={}", scene.dead_letter),
        format!("--retry-delays={DELAY}"),
        "--retry-attempts=1".to_owned(),
        format!("--idempotency-database-url={}", database.url()),
        "--metrics-addr=127.0.0.1:0".to_owned(),
    ];
    let worker_args: Vec<&str> = worker_args.iter().map(String::as_str).collect();
    let worker_env = env
        .kafka_args_as(&field("username"), &field("password"))
        .to_env();
    let worker_env: Vec<(&str, &str)> = worker_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let _worker = ChildProcess::spawn(
        "worker",
        workspace_binary("ferry-sidecar"),
        &worker_args,
        &worker_env,
    )
    .expect("worker");
    let producer = admin_producer(env);
    for (id, event) in [
        ("r-1", "order.created"),
        ("r-2", "order.created"),
        ("r-3", "order.paid"),
    ] {
        produce(
            &producer,
            &kafka_topic,
            Some(0),
            id,
            &envelope(id, event),
            &[],
        )
        .await;
    }
    wait_for("the three events dead-lettered", WITHIN, || async {
        (scene.high_watermark(&scene.dead_letter) == 3).then_some(())
    })
    .await;
    target.answer(200);

    // list and show read in the cluster too (a dry-run EventReplay's selection).
    let listed: serde_json::Value = serde_json::from_str(
        &scene
            .replay(&["dlq", "list", CONSUMER, "-o", "json"], async |_| {})
            .await,
    )
    .expect("JSON");
    let mut ids: Vec<&str> = listed
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|d| d["eventId"].as_str())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, ["r-1", "r-2", "r-3"], "{listed}");
    assert!(
        listed[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("422")),
        "{listed}"
    );
    let paid = scene
        .replay(
            &["dlq", "list", CONSUMER, "--type", "order.paid"],
            async |_| {},
        )
        .await;
    assert!(paid.contains("r-3") && !paid.contains("r-1"), "{paid}");
    let shown: serde_json::Value = serde_json::from_str(
        &scene
            .replay(
                &["dlq", "show", CONSUMER, "r-3", "-o", "json"],
                async |_| {},
            )
            .await,
    )
    .expect("JSON");
    assert_eq!(shown["payload"]["event"], "order.paid", "{shown}");
    assert_eq!(shown["eventType"], "order.paid", "{shown}");
    let admin = KafkaAdmin::new(&env.kafka_config(), Duration::from_secs(30)).expect("admin");
    let ledger_name = format!("ferry-replays-{CONSUMER}");
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), scene.ns.name());
    let replays: Api<EventReplay> = Api::namespaced(client.clone(), scene.ns.name());

    // --dry-run: selects, sends nothing, records nothing.
    let dry = scene
        .replay(
            &[
                "dlq",
                "replay",
                CONSUMER,
                "--type",
                "order.created",
                "--dry-run",
            ],
            async |_| {},
        )
        .await;
    assert!(dry.contains("would replay:       2"), "{dry}");
    assert_eq!(
        scene.high_watermark(&scene.tier),
        0,
        "a dry run sends nothing"
    );
    let ledger = configmaps.get_opt(&ledger_name).await.expect("ledger");
    assert!(
        ledger
            .and_then(|c| c.data)
            .is_none_or(|d| !d.contains_key("replayed")),
        "a dry run records nothing"
    );

    // The replay: its principal may read the dead letters and nothing else.
    let (dead_letter, tier, source) = (&scene.dead_letter, &scene.tier, &scene.source);
    let env_ref = env;
    let client_ref = client.clone();
    let ns_name = scene.ns.name().to_owned();
    let admin_ref = &admin;
    let check_principal = async |job: &Job| {
        let secrets: Api<Secret> = Api::namespaced(client_ref.clone(), &ns_name);
        let secret = secrets
            .get(&job.name_any())
            .await
            .expect("the principal's Secret");
        let data = secret.data.expect("data");
        let field = |k: &str| String::from_utf8(data[k].0.clone()).expect("utf-8");
        let (user, password) = (field("username"), field("password"));
        let held = admin_ref
            .describe_acls(Some(&format!("User:{user}")))
            .await
            .expect("ACLs");
        let mut ops: Vec<(String, Operation)> = held
            .iter()
            .map(|a| (a.resource_name.clone(), a.operation))
            .collect();
        ops.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
        assert_eq!(held.len(), 5, "{ops:?}");
        assert!(
            ops.contains(&(dead_letter.clone(), Operation::Read)),
            "{ops:?}"
        );
        assert!(ops.contains(&(tier.clone(), Operation::Write)), "{ops:?}");
        assert!(!ops.iter().any(|(t, _)| t == source), "{ops:?}");
        let config = env_ref
            .kafka_args_as(&user, &password)
            .client_config()
            .expect("config");
        assert!(
            read_once(&config, dead_letter, &user).is_ok(),
            "it reads its dead letters"
        );
        let other = read_once(&config, source, &user);
        assert!(
            refused(other.clone()),
            "the broker refuses the source topic: {other:?}"
        );
        let own_tier = read_once(&config, tier, &user);
        assert!(
            refused(own_tier.clone()),
            "it may write the tier, not read it: {own_tier:?}"
        );
    };
    let first = scene
        .replay(
            &["dlq", "replay", CONSUMER, "--type", "order.created"],
            check_principal,
        )
        .await;
    assert!(first.contains("replayed:           2"), "{first}");
    wait_for("each replayed event delivered once", WITHIN, || async {
        let accepted = target.accepted();
        (accepted.get("r-1") == Some(&1) && accepted.get("r-2") == Some(&1)).then_some(())
    })
    .await;
    assert_eq!(target.accepted().get("r-3"), None, "r-3 was not selected");
    assert!(
        first.contains("r-1") && first.contains("r-2") && !first.contains("r-3"),
        "{first}"
    );
    assert_eq!(
        scene.high_watermark(&scene.tier),
        2,
        "each replayed once, into the tier"
    );

    // Its outcome is in status and an Event; its principal is gone.
    let done = replays.list(&ListParams::default()).await.expect("replays");
    let succeeded = done
        .items
        .iter()
        .filter(|r| !r.spec.dry_run)
        .find(|r| {
            r.status
                .as_ref()
                .and_then(|s| s.result.as_ref())
                .is_some_and(|x| x.replayed == 2)
        })
        .expect("the replay's status");
    let name = succeeded.name_any();
    wait_for_event(&client, scene.ns.name(), "Replayed", &name).await;
    let phase = succeeded.status.as_ref().and_then(|s| s.phase);
    assert_eq!(phase, Some(ReplayPhase::Succeeded));
    let acls = admin.describe_acls(None).await.expect("ACLs");
    assert!(
        !acls
            .iter()
            .any(|a| a.principal.starts_with("User:ferry-replay-")
                && a.principal
                    .ends_with(succeeded.uid().as_deref().unwrap_or("?"))),
        "the replay's principal is removed once it reported"
    );

    // The same selection again replays nothing.
    let second = scene
        .replay(
            &["dlq", "replay", CONSUMER, "--type", "order.created"],
            async |_| {},
        )
        .await;
    assert!(second.contains("replayed:           0"), "{second}");
    assert!(second.contains("already replayed:   2"), "{second}");
    assert_eq!(scene.high_watermark(&scene.tier), 2);

    // --again replays the same event ids again (the worker de-duplicates them by id).
    let again = scene
        .replay(
            &[
                "dlq",
                "replay",
                CONSUMER,
                "--type",
                "order.created",
                "--again",
            ],
            async |_| {},
        )
        .await;
    assert!(again.contains("replayed:           2"), "{again}");
    assert_eq!(scene.high_watermark(&scene.tier), 4);
    let requests_before = target.requests().len();
    wait_for(
        "the worker to finish the re-replayed tier records",
        WITHIN,
        || async { all_committed(env, &group, &scene.tier).then_some(()) },
    )
    .await;
    assert_eq!(
        target.requests().len(),
        requests_before,
        "a de-duplicated event was delivered"
    );
    for id in ["r-1", "r-2"] {
        assert_eq!(target.accepted().get(id), Some(&1), "{id}");
    }

    tear_down(&scene.ns, operator, &consumers, &topics).await;
}

/// An EventReplay committed as a GitOps tool would (created through the API, not by the
/// plugin) for a consumer without retry tiers and without `toSource`: the operator refuses it
/// with the plugin's own reason in status and a Warning Event, makes no Job and no principal;
/// the plugin, asked the same, exits non-zero with that reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_replay_that_cannot_run_fails_with_its_reason_in_status_and_an_event() {
    let env = require_env!();
    let (ns, operator, consumers, topics, _) = operated(env, &[], &[]).await;
    let client = ns.client();
    let replays: Api<EventReplay> = Api::namespaced(client.clone(), ns.name());
    let committed: EventReplay = serde_json::from_value(json!({
        "apiVersion": "ferry.dev/v1alpha1", "kind": "EventReplay",
        "metadata": {"name": "committed"},
        "spec": {"consumer": CONSUMER, "all": true},
    }))
    .expect("EventReplay");
    replays
        .create(&PostParams::default(), &committed)
        .await
        .expect("EventReplay");
    let status = wait_for("the replay refused", WITHIN, || async {
        let s = replays.get("committed").await.ok()?.status?;
        (s.phase == Some(ReplayPhase::Failed)).then_some(s)
    })
    .await;
    let message = status.message.clone().unwrap_or_default();
    assert!(
        message.contains("no retry tier") && message.contains("toSource"),
        "{message}"
    );
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "Stalled" && c.status == ConditionStatus::True)
    );
    wait_for_event(&client, ns.name(), "ReplayFailed", "committed").await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns.name());
    assert!(
        jobs.list(&ListParams::default())
            .await
            .expect("jobs")
            .items
            .is_empty()
    );
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns.name());
    assert!(
        secrets
            .get_opt("ferry-replay-committed")
            .await
            .expect("secret")
            .is_none()
    );

    // A spec that selects nothing is refused by the API server itself (CEL).
    let unselective: EventReplay = serde_json::from_value(json!({
        "apiVersion": "ferry.dev/v1alpha1", "kind": "EventReplay",
        "metadata": {"name": "everything-by-accident"},
        "spec": {"consumer": CONSUMER},
    }))
    .expect("EventReplay");
    let err = replays
        .create(&PostParams::default(), &unselective)
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("all: true"), "{err}");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kubectl-ferry"))
        .args([
            "dlq",
            "replay",
            CONSUMER,
            "--all",
            "-n",
            ns.name(),
            "--timeout",
            "2m",
        ])
        .env("KUBECONFIG", env.kubeconfig())
        .output()
        .expect("kubectl-ferry runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("failed") && stderr.contains("no retry tier"),
        "{stderr}"
    );
    tear_down(&ns, operator, &consumers, &topics).await;
}

/// The Job dies without reporting (on the real node, its image is a busybox that cannot run
/// `dlq-replay`: the container exits non-zero at once): the replay is Failed with that reason
/// and a Warning Event, its principal is removed, and the Job says how long it stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_job_that_dies_without_reporting_fails_the_replay() {
    let env = require_env!();
    let Some(node) = env.real_node() else { return };
    let image = node.testbox_image().to_owned();
    let (ns, operator, consumers, topics, _) =
        operated(env, &[DELAY], &["--sidecar-image", &image]).await;
    node.claim(&ns)
        .await
        .expect("the namespace's pods run on the real node");
    let client = ns.client();
    let replays: Api<EventReplay> = Api::namespaced(client.clone(), ns.name());
    let replay: EventReplay = serde_json::from_value(json!({
        "apiVersion": "ferry.dev/v1alpha1", "kind": "EventReplay",
        "metadata": {"name": "doomed"},
        "spec": {"consumer": CONSUMER, "all": true},
    }))
    .expect("EventReplay");
    let created = replays
        .create(&PostParams::default(), &replay)
        .await
        .expect("EventReplay");
    let status = wait_for("the replay failed", WITHIN, || async {
        let s = replays.get("doomed").await.ok()?.status?;
        (s.phase == Some(ReplayPhase::Failed)).then_some(s)
    })
    .await;
    let message = status.message.clone().unwrap_or_default();
    assert!(
        message.contains("failed without reporting a result") && message.contains("kubectl logs"),
        "{message}"
    );
    assert_eq!(status.principal, None, "no principal in status once failed");
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns.name());
    let job = jobs
        .list(&ListParams::default())
        .await
        .expect("jobs")
        .items
        .pop()
        .expect("the replay's Job");
    let job_spec = job.spec.expect("job spec");
    assert_eq!(job_spec.backoff_limit, Some(0));
    assert_eq!(job_spec.ttl_seconds_after_finished, Some(86_400));
    wait_for_event(&client, ns.name(), "ReplayFailed", "doomed").await;
    let admin = KafkaAdmin::new(&env.kafka_config(), Duration::from_secs(30)).expect("admin");
    let uid = created.uid().unwrap_or_default();
    let acls = admin.describe_acls(None).await.expect("ACLs");
    assert!(
        !acls.iter().any(|a| a.principal.ends_with(&uid)),
        "the dead Job's principal is removed: {acls:?}"
    );
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns.name());
    assert!(
        secrets
            .get_opt("ferry-replay-doomed")
            .await
            .expect("secret")
            .is_none(),
        "its credential Secret is removed"
    );
    tear_down(&ns, operator, &consumers, &topics).await;
}
