//! `dlq list`, `dlq show` and `dlq replay` through the operator (the default). For a replay: the plugin creates an `EventReplay` with
//! the user's own RBAC (`create eventreplays`), the operator runs a Job for it under a Kafka
//! principal of its own (READ on the consumer's dead-letter topic, WRITE on its first retry
//! tier or, with `--to-source`, its source topics; nothing else), and the plugin waits for the
//! Job's outcome in the EventReplay's status and prints it. No Kafka credential reaches the
//! laptop, and the brokers need not be reachable from it. A GitOps user commits the same
//! EventReplay instead. `list` and `show` are a dry-run EventReplay whose Job writes its
//! selection into a ConfigMap the EventReplay owns ([`select`]).

use std::time::Duration;

use ferry_operator::api::{EventReplay, EventReplaySpec, EventReplayStatus};
use ferry_sidecar::dlq::{dead_letter::DeadLetter, filter::FilterArgs, job::SELECTION_KEY};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api,
    api::{DeleteParams, ObjectMeta, PostParams},
};
use serde::Serialize;

use crate::{
    cluster::Cluster,
    dlq::ReplayArgs,
    error::{Error, Result},
    output::{self, Format},
};

/// How often the plugin reads the EventReplay while it waits.
const POLL: Duration = Duration::from_secs(1);

/// The EventReplay that `args` ask for.
pub fn spec(args: &ReplayArgs) -> EventReplaySpec {
    let f = &args.filter;
    EventReplaySpec {
        consumer: args.consumer.clone(),
        reason: f.reason.clone(),
        event_type: f.event_type.clone(),
        ids: f.ids.clone(),
        topic: f.original_topic.clone(),
        since: f.since.clone(),
        until: f.until.clone(),
        all: args.all,
        dry_run: args.dry_run,
        rate: args.rate,
        again: args.again,
        to_source: args.to_source,
    }
}

/// What `-o json|yaml` prints: the EventReplay's name and status.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Outcome<'a> {
    event_replay: &'a str,
    consumer: String,
    dry_run: bool,
    status: &'a EventReplayStatus,
}

/// Creates an EventReplay for `spec` (named after the consumer), waits for it to finish (at
/// most `timeout`) and returns its name and status; a Failed replay is an error.
async fn run(
    cluster: &Cluster,
    spec: EventReplaySpec,
    timeout: Duration,
) -> Result<(String, EventReplayStatus)> {
    let ns = &cluster.namespace;
    let api: Api<EventReplay> = Api::namespaced(cluster.client.clone(), ns);
    let request = EventReplay {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", spec.consumer)),
            namespace: Some(ns.clone()),
            ..ObjectMeta::default()
        },
        spec,
        status: None,
    };
    let created = api
        .create(&PostParams::default(), &request)
        .await
        .map_err(|e| {
            Error::from_kube(
                e,
                format!("creating an EventReplay in {ns}"),
                format!(
                    "create on eventreplays.ferry.dev in namespace {ns} (the operator reads and replays dead letters from a Job; no Kafka credential is needed here)"
                ),
                None,
            )
        })?;
    let name = created.metadata.name.clone().unwrap_or_default();
    eprintln!("EventReplay {ns}/{name} created; waiting for the operator's Job");
    let deadline = tokio::time::Instant::now() + timeout;
    let status = loop {
        let now = api.get(&name).await.map_err(|e| {
            Error::from_kube(
                e,
                format!("reading EventReplay {ns}/{name}"),
                format!("get on eventreplays.ferry.dev in namespace {ns}"),
                Some(("EventReplay", ns, &name)),
            )
        })?;
        if let Some(s) = now.status
            && s.phase.is_some_and(|p| p.is_finished())
        {
            break s;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::unusable(format!(
                "EventReplay {ns}/{name} has not finished within {}s; it goes on in the cluster: kubectl get eventreplay {name} -n {ns}",
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(POLL).await;
    };
    if status.phase == Some(ferry_operator::api::ReplayPhase::Failed) {
        return Err(Error::unusable(format!(
            "EventReplay {ns}/{name} failed: {}",
            status.message.clone().unwrap_or_default()
        )));
    }
    Ok((name, status))
}

/// The dead letters of `consumer` that `filter` selects, read in the cluster: a dry-run
/// EventReplay whose Job writes its selection into a ConfigMap the EventReplay owns. The
/// EventReplay is deleted afterwards (best effort: a list is not an event worth keeping).
pub async fn select(
    cluster: &Cluster,
    consumer: &str,
    filter: &FilterArgs,
    timeout: Duration,
) -> Result<Vec<DeadLetter>> {
    let spec = EventReplaySpec {
        consumer: consumer.to_owned(),
        reason: filter.reason.clone(),
        event_type: filter.event_type.clone(),
        ids: filter.ids.clone(),
        topic: filter.original_topic.clone(),
        since: filter.since.clone(),
        until: filter.until.clone(),
        dry_run: true,
        ..EventReplaySpec::default()
    };
    let (name, status) = run(cluster, spec, timeout).await?;
    let ns = &cluster.namespace;
    let selection = status.job_name.clone().unwrap_or_default();
    let configmaps: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), ns);
    let read = configmaps.get(&selection).await.map_err(|e| {
        Error::from_kube(
            e,
            format!("reading ConfigMap {ns}/{selection}"),
            format!("get on configmaps in namespace {ns} (the selection of EventReplay {name})"),
            None,
        )
    });
    let api: Api<EventReplay> = Api::namespaced(cluster.client.clone(), ns);
    let _ = api.delete(&name, &DeleteParams::default()).await;
    let text = read?
        .data
        .and_then(|mut d| d.remove(SELECTION_KEY))
        .unwrap_or_else(|| "[]".into());
    let selected: Vec<DeadLetter> = serde_json::from_str(&text).map_err(|e| {
        Error::unusable(format!(
            "the selection of EventReplay {ns}/{name} is not readable: {e}"
        ))
    })?;
    let result = status.result.unwrap_or_default();
    if result.listed < result.selected {
        eprintln!(
            "only {} of {} selected dead letters fit in a ConfigMap; narrow the selection to see the rest",
            result.listed, result.selected
        );
    }
    Ok(selected)
}

/// Creates the EventReplay `args` ask for, waits for it and renders the result.
pub async fn replay(cluster: &Cluster, args: &ReplayArgs, timeout: Duration) -> Result<String> {
    let ns = &cluster.namespace;
    let (name, status) = run(cluster, spec(args), timeout).await?;
    if args.output != Format::Table {
        return output::structured(
            &Outcome {
                event_replay: &name,
                consumer: format!("{ns}/{}", args.consumer),
                dry_run: args.dry_run,
                status: &status,
            },
            args.output,
        );
    }
    Ok(summary(ns, &name, args, &status))
}

fn summary(ns: &str, name: &str, args: &ReplayArgs, status: &EventReplayStatus) -> String {
    let result = status.result.clone().unwrap_or_default();
    let mut out = format!(
        "{}replay of {ns}/{} to {} (EventReplay {name})\n",
        if args.dry_run { "dry-run: " } else { "" },
        args.consumer,
        if result.destination.is_empty() {
            "-"
        } else {
            &result.destination
        },
    );
    out.push_str(&format!("selected:           {}\n", result.selected));
    out.push_str(&format!(
        "already replayed:   {}{}\n",
        result.already_replayed,
        if result.already_replayed == 0 {
            ""
        } else {
            " (skipped; --again replays them, the worker de-duplicates by event id)"
        }
    ));
    out.push_str(&format!("not replayable:     {}\n", result.skipped));
    out.push_str(&format!(
        "{}{}\n",
        if args.dry_run {
            "would replay:       "
        } else {
            "replayed:           "
        },
        result.replayed
    ));
    for id in &result.replayed_ids {
        out.push_str(&format!("  {id}\n"));
    }
    out
}
