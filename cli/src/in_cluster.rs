//! `dlq replay` through the operator (the default): the plugin creates an `EventReplay` with
//! the user's own RBAC (`create eventreplays`), the operator runs a Job for it under a Kafka
//! principal of its own (READ on the consumer's dead-letter topic, WRITE on its first retry
//! tier or, with `--to-source`, its source topics; nothing else), and the plugin waits for the
//! Job's outcome in the EventReplay's status and prints it. No Kafka credential reaches the
//! laptop, and the brokers need not be reachable from it. A GitOps user commits the same
//! EventReplay instead.

use std::time::Duration;

use ferry_operator::api::{EventReplay, EventReplaySpec, EventReplayStatus};
use kube::{
    Api,
    api::{ObjectMeta, PostParams},
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

/// Creates the EventReplay, waits for it to finish (at most `timeout`) and renders the result.
pub async fn replay(cluster: &Cluster, args: &ReplayArgs, timeout: Duration) -> Result<String> {
    let ns = &cluster.namespace;
    let api: Api<EventReplay> = Api::namespaced(cluster.client.clone(), ns);
    let request = EventReplay {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", args.consumer)),
            namespace: Some(ns.clone()),
            ..ObjectMeta::default()
        },
        spec: spec(args),
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
                    "create on eventreplays.ferry.dev in namespace {ns} (the operator replays from a Job; no Kafka credential is needed here)"
                ),
                None,
            )
        })?;
    let name = created.metadata.name.clone().unwrap_or_default();
    eprintln!("EventReplay {ns}/{name} created; waiting for the operator's replay Job");
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
            return Err(Error::Unusable(format!(
                "EventReplay {ns}/{name} has not finished within {}s; it goes on in the cluster: kubectl get eventreplay {name} -n {ns}",
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(POLL).await;
    };
    if status.phase == Some(ferry_operator::api::ReplayPhase::Failed) {
        return Err(Error::Unusable(format!(
            "EventReplay {ns}/{name} failed: {}",
            status.message.clone().unwrap_or_default()
        )));
    }
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
