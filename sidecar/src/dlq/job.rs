//! `ferry-sidecar dlq-replay`: the process of an EventReplay's Job. The operator starts it in
//! the consumer's namespace under a Kafka principal of its own (READ on the consumer's
//! dead-letter topic and WRITE on where the replay goes, nothing else) and a ServiceAccount
//! that may read and write the consumer's replay ledger and this one EventReplay's status.
//!
//! ```text
//!  operator ─Job─▶ dlq-replay ─scan──▶ dead-letter topic   (READ, its own principal)
//!                     │        plan ◀─ ledger ConfigMap    (get)
//!                     │        send ─▶ first tier / source  (WRITE)
//!                     │        save ─▶ ledger ConfigMap    (patch, after Kafka acked)
//!                     └─ result ─▶ EventReplay status.result (patch, this one object)
//! ```
//!
//! It reports its outcome itself, into `status.result`, so the outcome never depends on a
//! kubelet reporting the pod's end: the operator turns that result into the EventReplay's
//! phase, conditions and an Event. The Kafka logic is the plugin's own ([`super::scan`],
//! [`super::replay`]): one implementation for both.

use std::time::SystemTime;

use clap::Args;
use ferry_common::kafka::KafkaArgs;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams},
};
use serde::Serialize;
use tracing::{error, info};

use super::{
    filter::FilterArgs,
    ledger::{self, Ledger, Owner},
    replay::{self, Destination},
    scan,
    target::Target,
};

/// The field manager the Job writes the ledger and its result with.
pub const FIELD_MANAGER: &str = "ferry-replay-job";
/// The ConfigMap key holding a dry run's selection (JSON list of dead letters).
pub const SELECTION_KEY: &str = "selected.json";
/// The most a dry run writes into its selection ConfigMap: ConfigMaps hold at most 1 MiB
/// (Kubernetes' `MaxSecretSize`-like limit on ConfigMap data); the rest is left out and said.
const SELECTION_BYTES: usize = 900 * 1024;
/// Event ids listed in a result at most: a status is read by people, and etcd objects are
/// bounded (1.5 MiB); the counts are always complete.
const LISTED_IDS: usize = 100;

/// `ferry-sidecar dlq-replay`: what the operator passes to a replay Job.
#[derive(Debug, Args)]
pub struct ReplayJobArgs {
    /// Namespace of the EventReplay and its EventConsumer.
    #[arg(long, env = "FERRY_REPLAY_NAMESPACE")]
    pub namespace: String,
    /// The EventReplay this Job reports to.
    #[arg(long, env = "FERRY_REPLAY_NAME")]
    pub replay: String,
    /// The EventConsumer's name.
    #[arg(long, env = "FERRY_REPLAY_CONSUMER")]
    pub consumer: String,
    /// The EventConsumer's uid (the ledger ConfigMap is owned by it).
    #[arg(long, env = "FERRY_REPLAY_CONSUMER_UID")]
    pub consumer_uid: Option<String>,
    /// The consumer's group (dead letters carry it in `ferry-group`).
    #[arg(long, env = "FERRY_REPLAY_GROUP")]
    pub group: String,
    /// The group this reader names (the replay principal's own; nothing is committed).
    #[arg(long, env = "FERRY_REPLAY_READER_GROUP")]
    pub reader_group: String,
    /// The consumer's dead-letter topic.
    #[arg(long, env = "FERRY_REPLAY_DEAD_LETTER_TOPIC")]
    pub dead_letter_topic: String,
    /// The consumer's source topics, comma-separated.
    #[arg(long, env = "FERRY_REPLAY_SOURCES", value_delimiter = ',')]
    pub sources: Vec<String>,
    /// The delay of the consumer's first retry tier, if it has tiers.
    #[arg(long, env = "FERRY_REPLAY_FIRST_DELAY")]
    pub first_delay: Option<String>,
    /// Replay into the source topics instead of the first tier.
    #[arg(long, env = "FERRY_REPLAY_TO_SOURCE")]
    pub to_source: bool,
    /// Select and report; send nothing, record nothing.
    #[arg(long, env = "FERRY_REPLAY_DRY_RUN")]
    pub dry_run: bool,
    /// Replay what the ledger says was replayed too.
    #[arg(long, env = "FERRY_REPLAY_AGAIN")]
    pub again: bool,
    /// At most this many events per second.
    #[arg(long, env = "FERRY_REPLAY_RATE")]
    pub rate: Option<f64>,
    /// A dry run's selection goes into this ConfigMap (made empty by the operator), so
    /// `kubectl ferry dlq list`/`show` read dead letters without reaching Kafka.
    #[arg(long, env = "FERRY_REPLAY_SELECTION_CONFIGMAP")]
    pub selection_configmap: Option<String>,
    /// When the EventReplay was created (RFC 3339): relative `--since`/`--until` count back
    /// from it, so a Job retried later selects the same events.
    #[arg(long, env = "FERRY_REPLAY_REQUESTED_AT")]
    pub requested_at: Option<Timestamp>,
    #[command(flatten)]
    pub filter: FilterArgs,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub log: ferry_common::telemetry::LogArgs,
}

/// What the Job reports in `status.result` (the operator reads it back as
/// `ferry_operator::api::ReplayResult`).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct JobResult {
    /// `Succeeded` or `Failed`.
    pub outcome: String,
    /// Dead letters of the consumer the filters selected.
    pub selected: usize,
    /// Records sent back (or that would be, in a dry run).
    pub replayed: usize,
    /// Selected records the ledger says were replayed before (skipped without `again`).
    pub already_replayed: usize,
    /// Selected records that cannot be replayed.
    pub skipped: usize,
    /// Selected records written into the selection ConfigMap (a dry run's).
    pub listed: usize,
    /// The event ids replayed (the first [`LISTED_IDS`]).
    pub replayed_ids: Vec<String>,
    /// Where the records went.
    pub destination: String,
    /// One sentence: what happened, or why it failed.
    pub message: String,
    /// When the Job finished (RFC 3339).
    pub finished_at: String,
}

/// Runs the replay and reports it; fails (exit code 1) only after reporting the failure, or
/// when the report itself cannot be written.
pub async fn run(args: ReplayJobArgs) -> anyhow::Result<()> {
    let client = Client::try_default().await?;
    let result = match replay_once(&args, &client).await {
        Ok(result) => {
            info!(
                replayed = result.replayed,
                selected = result.selected,
                "replay done"
            );
            result
        }
        Err(message) => {
            error!(%message, "replay failed");
            JobResult {
                outcome: "Failed".into(),
                message,
                ..JobResult::default()
            }
        }
    };
    let result = JobResult {
        finished_at: Timestamp::now().to_string(),
        ..result
    };
    report(&client, &args, &result).await?;
    if result.outcome == "Failed" {
        anyhow::bail!("{}", result.message);
    }
    Ok(())
}

/// The API resource of EventReplay, without the operator's types (the sidecar does not link
/// the operator).
fn event_replays(client: &Client, namespace: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("ferry.dev", "v1alpha1", "EventReplay");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "eventreplays");
    Api::namespaced_with(client.clone(), namespace, &resource)
}

/// Writes `result` into the EventReplay's `status.result`.
async fn report(client: &Client, args: &ReplayJobArgs, result: &JobResult) -> anyhow::Result<()> {
    let patch = serde_json::json!({"status": {"result": result}});
    event_replays(client, &args.namespace)
        .patch_status(&args.replay, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// The selection as JSON, as many dead letters as fit in [`SELECTION_BYTES`], and how many.
fn selection_json(selected: &[super::dead_letter::DeadLetter]) -> (String, usize) {
    let mut n = selected.len();
    loop {
        let json = serde_json::to_string(&selected[..n]).unwrap_or_else(|_| "[]".into());
        if json.len() <= SELECTION_BYTES || n == 0 {
            return (json, n);
        }
        // Cut proportionally, then again if needed: a few rounds at most.
        n = (n * SELECTION_BYTES / json.len()).min(n - 1);
    }
}

async fn replay_once(args: &ReplayJobArgs, client: &Client) -> Result<JobResult, String> {
    let now = args.requested_at.unwrap_or_else(Timestamp::now);
    let filter = args.filter.parse(now).map_err(|e| e.to_string())?;
    let target = Target {
        name: args.consumer.clone(),
        group: args.group.clone(),
        dead_letter_topic: args.dead_letter_topic.clone(),
        sources: args.sources.clone(),
        first_delay: args.first_delay.clone(),
    };
    let destination = if args.to_source {
        Destination::Source
    } else {
        Destination::FirstTier
    };
    let kafka = args.kafka.client_config().map_err(|e| e.to_string())?;
    let selected = scan::scan(
        &kafka,
        &target.dead_letter_topic,
        &target.group,
        &args.reader_group,
        &filter,
    )
    .await
    .map_err(|e| e.to_string())?;
    let owner = Owner {
        namespace: args.namespace.clone(),
        name: args.consumer.clone(),
        uid: args.consumer_uid.clone(),
    };
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &args.namespace);
    let name = ledger::configmap_name(&args.consumer);
    let found = configmaps
        .get_opt(&name)
        .await
        .map_err(|e| format!("reading the replay ledger {name}: {e}"))?;
    let mut ledger_now: Ledger = ledger::from_configmap(found, &owner)?;
    let plan = replay::plan(
        &selected,
        &target,
        destination,
        &ledger_now,
        args.again,
        SystemTime::now(),
    );
    let where_to = match destination {
        Destination::FirstTier => "the first retry tier",
        Destination::Source => "the source topic",
    };
    let mut result = JobResult {
        outcome: "Succeeded".into(),
        selected: selected.len(),
        replayed: plan.sends.len(),
        already_replayed: plan.already_replayed.len(),
        skipped: plan.skipped.len(),
        listed: 0,
        replayed_ids: plan
            .sends
            .iter()
            .take(LISTED_IDS)
            .map(|s| s.event_id.clone().unwrap_or_else(|| "-".into()))
            .collect(),
        destination: where_to.into(),
        message: String::new(),
        finished_at: String::new(),
    };
    if args.dry_run
        && let Some(name) = &args.selection_configmap
    {
        let (json, listed) = selection_json(&selected);
        result.listed = listed;
        let cm = serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": args.namespace},
            "data": {SELECTION_KEY: json},
        });
        configmaps
            .patch(
                name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&cm),
            )
            .await
            .map_err(|e| format!("writing the selection into ConfigMap {name}: {e}"))?;
    }
    if args.dry_run || plan.sends.is_empty() {
        result.message = format!(
            "{}{} of {} selected dead letters {} to {where_to}",
            if args.dry_run { "dry run: " } else { "" },
            plan.sends.len(),
            selected.len(),
            if args.dry_run {
                "would be replayed"
            } else {
                "replayed"
            },
        );
        return Ok(result);
    }
    let producer = replay::producer(&kafka).map_err(|e| e.to_string())?;
    let mut sent = 0usize;
    let total = plan.sends.len();
    let replay_name = args.replay.clone();
    let outcome = replay::send(&producer, &plan.sends, args.rate, |done| {
        sent += done.len();
        for c in &done {
            ledger_now.insert(&c.topic, c.partition, c.offset);
        }
        let line = format!(
            "EventReplay {replay_name} replayed {sent} of {total} selected events to {where_to} at {}",
            Timestamp::now()
        );
        let cm = ledger::configmap(&owner, &ledger_now, &line, FIELD_MANAGER);
        let (configmaps, name) = (configmaps.clone(), name.clone());
        async move {
            configmaps
                .patch(
                    &name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&cm),
                )
                .await
                .map(|_| ())
                .map_err(|e| {
                    super::Error::Unusable(format!("writing the replay ledger {name}: {e}"))
                })
        }
    })
    .await;
    result.replayed = sent;
    match outcome {
        Ok(()) => {
            result.message = format!(
                "{sent} of {} selected dead letters replayed to {where_to}",
                selected.len()
            );
            Ok(result)
        }
        Err(e) => Err(format!("replayed {sent} of {total}, then: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dlq::dead_letter::{
        DeadLetter,
        tests::{ENVELOPE, record},
    };

    #[test]
    fn a_selection_too_large_for_a_configmap_is_cut_and_says_how_much_fits() {
        let one = DeadLetter::from_message(&record(1, &[], ENVELOPE));
        let (json, n) = selection_json(std::slice::from_ref(&one));
        assert_eq!(n, 1);
        let back: Vec<DeadLetter> = serde_json::from_str(&json).expect("JSON");
        assert_eq!(back[0].event_type, one.event_type);
        let many = vec![one; 20_000];
        let (json, n) = selection_json(&many);
        assert!(json.len() <= SELECTION_BYTES, "{}", json.len());
        assert!(n > 0 && n < many.len(), "{n}");
        assert_eq!(selection_json(&[]), ("[]".to_owned(), 0));
    }
}
