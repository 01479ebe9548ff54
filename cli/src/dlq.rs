//! `dlq list`, `dlq show` and `dlq replay`: the shells around the pure parts
//! ([`crate::dead_letter`], [`crate::filter`], [`crate::replay::plan`], [`crate::ledger`]). Each
//! reads the EventConsumer and its credential Secret through the API server as the user, then
//! reads the dead-letter topic (and writes the replay) with that consumer's own Kafka
//! credential.

use std::time::SystemTime;

use clap::{Args, Subcommand};
use ferry_operator::{api::EventTopic, identity::credentials::secret_name};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use kube::{
    Api,
    api::{ListParams, ObjectMeta, PostParams},
};
use rdkafka::ClientConfig;
use serde::Serialize;

use crate::{
    cluster::{Cluster, KubeArgs},
    consumer::ConsumerView,
    credential,
    dead_letter::DeadLetter,
    error::{Error, Result},
    filter::{Filter, FilterArgs},
    ledger::{self, FIELD_MANAGER},
    output::{self, Format},
    replay::{self, Destination, Plan},
    scan,
};

/// `kubectl ferry dlq …`
#[derive(Subcommand, Debug, Clone)]
pub enum DlqCommand {
    /// List the dead-lettered events of an EventConsumer.
    List(ListArgs),
    /// Show dead-lettered events in full (headers and payload).
    Show(ShowArgs),
    /// Send dead-lettered events back to their consumer, each keeping its event id.
    Replay(Box<ReplayArgs>),
}

/// How Kafka is reached from here.
#[derive(Args, Debug, Clone, Default)]
#[command(next_help_heading = "Kafka")]
pub struct KafkaReach {
    /// Brokers to use instead of the credential Secret's bootstrap.servers (a port-forward,
    /// or the brokers' names as this machine knows them).
    #[arg(long, env = "KUBECTL_FERRY_KAFKA_BOOTSTRAP", global = true)]
    pub kafka_bootstrap: Option<String>,
}

/// `dlq list`
#[derive(Args, Debug, Clone)]
pub struct ListArgs {
    /// The EventConsumer.
    pub consumer: String,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    pub output: Format,
    #[command(flatten)]
    pub mode: Mode,
}

/// Where Kafka is read from.
#[derive(Args, Debug, Clone)]
pub struct Mode {
    /// Read Kafka from this machine with the consumer's own credential (read from its
    /// Secret) instead of asking the operator for a Job (a dry-run EventReplay, the default).
    #[arg(long)]
    pub direct: bool,
    /// How long to wait for the operator's Job (`10m`, `90s`).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
}

/// `dlq show`
#[derive(Args, Debug, Clone)]
pub struct ShowArgs {
    /// The EventConsumer.
    pub consumer: String,
    /// The event id.
    pub event_id: String,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    pub output: Format,
    #[command(flatten)]
    pub mode: Mode,
}

/// `dlq replay`
#[derive(Args, Debug, Clone)]
pub struct ReplayArgs {
    /// The EventConsumer.
    pub consumer: String,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Replay every dead letter of the consumer (required when no filter narrows the
    /// selection, so a bare `replay` never floods a service by accident).
    #[arg(long)]
    pub all: bool,
    /// Print what would be replayed; send nothing, record nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// At most this many events per second (`50` or `50/s`).
    #[arg(long, value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// Replay events again even if the ledger says they were replayed (the worker still
    /// de-duplicates them by event id).
    #[arg(long)]
    pub again: bool,
    /// For a consumer without retry tiers: write to the source topic, which every consumer
    /// group of that topic reads (with a producer's credential of that EventTopic).
    #[arg(long)]
    pub to_source: bool,
    /// Output format of the summary.
    #[arg(short, long, value_enum, default_value_t)]
    pub output: Format,
    /// Replay from the laptop with the consumer's own Kafka credential (read from its Secret)
    /// instead of asking the operator for a replay Job (an EventReplay, the default).
    #[arg(long)]
    pub direct: bool,
    /// How long to wait for the operator's replay Job (`10m`, `90s`).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
}

/// `50`, `50/s` or `2.5/s` events per second.
fn parse_rate(input: &str) -> Result<f64, String> {
    let number = input.strip_suffix("/s").unwrap_or(input);
    match number.parse::<f64>() {
        Ok(r) if r > 0.0 && r.is_finite() => Ok(r),
        _ => Err(format!("{input:?} is not a rate such as 50 or 50/s")),
    }
}

/// The consumer, and a Kafka client configuration with its credential.
struct Session {
    cluster: Cluster,
    consumer: ConsumerView,
    reach: KafkaReach,
}

impl Session {
    async fn open(kube: &KubeArgs, reach: &KafkaReach, name: &str) -> Result<Self> {
        let cluster = kube.connect().await?;
        let consumer = ConsumerView::fetch(&cluster, name).await?;
        Ok(Self {
            cluster,
            consumer,
            reach: reach.clone(),
        })
    }

    /// A Kafka configuration with the credential of Secret `secret`.
    async fn kafka(&self, secret: &str) -> Result<ClientConfig> {
        let data = credential::fetch(&self.cluster, secret).await?;
        let args = credential::kafka_args(
            &data,
            self.reach.kafka_bootstrap.as_deref(),
            &self.cluster.namespace,
            secret,
        )?;
        credential::client_config(&args)
    }

    /// The consumer's dead letters that `filter` selects.
    async fn dead_letters(&self, filter: &Filter) -> Result<Vec<DeadLetter>> {
        let kafka = self.kafka(&self.consumer.credential_secret).await?;
        Ok(scan::scan(
            &kafka,
            &self.consumer.dead_letter_topic,
            &self.consumer.group,
            &self.consumer.group,
            filter,
        )
        .await?)
    }
}

/// Runs a `dlq` command and returns what to print.
pub async fn run(command: &DlqCommand, kube: &KubeArgs, reach: &KafkaReach) -> Result<String> {
    match command {
        DlqCommand::List(args) => list(args, kube, reach).await,
        DlqCommand::Show(args) => show(args, kube, reach).await,
        DlqCommand::Replay(args) => replay(args, kube, reach).await,
    }
}

async fn list(args: &ListArgs, kube: &KubeArgs, reach: &KafkaReach) -> Result<String> {
    let filter = args.filter.parse(Timestamp::now())?;
    let (selected, whose) = if args.mode.direct {
        let session = Session::open(kube, reach, &args.consumer).await?;
        let whose = format!(
            "{}/{} in {}",
            session.consumer.namespace, session.consumer.name, session.consumer.dead_letter_topic
        );
        (session.dead_letters(&filter).await?, whose)
    } else {
        let cluster = kube.connect().await?;
        let whose = format!("{}/{}", cluster.namespace, args.consumer);
        let selected =
            crate::in_cluster::select(&cluster, &args.consumer, &args.filter, args.mode.timeout)
                .await?;
        (selected, whose)
    };
    if args.output != Format::Table {
        return output::structured(&selected, args.output);
    }
    if selected.is_empty() {
        return Ok(format!("No dead-lettered events of {whose} match.\n"));
    }
    let now = Timestamp::now();
    let rows: Vec<Vec<String>> = selected
        .iter()
        .map(|d| {
            vec![
                d.event_id.clone().unwrap_or_else(|| "-".into()),
                d.event_type.clone().unwrap_or_else(|| "-".into()),
                origin(d),
                d.attempts.map_or_else(|| "-".into(), |a| a.to_string()),
                truncate(d.reason.as_deref().unwrap_or("-"), 60),
                d.failed_at.map_or_else(
                    || "-".into(),
                    |t| output::age((now - t).get_seconds()) + " ago",
                ),
            ]
        })
        .collect();
    Ok(output::table(
        &[
            "event id", "type", "original", "attempts", "reason", "failed",
        ],
        &rows,
    ))
}

/// `topic/partition@offset` of where a dead letter was first read.
fn origin(d: &DeadLetter) -> String {
    format!(
        "{}/{}@{}",
        d.original_topic.as_deref().unwrap_or("?"),
        d.original_partition
            .map_or_else(|| "?".into(), |p| p.to_string()),
        d.original_offset
            .map_or_else(|| "?".into(), |o| o.to_string())
    )
}

fn truncate(s: &str, max: usize) -> String {
    let one_line = s.replace('\n', " ");
    if one_line.chars().count() <= max {
        return one_line;
    }
    let cut: String = one_line.chars().take(max.saturating_sub(1)).collect();
    format!("{cut}…")
}

async fn show(args: &ShowArgs, kube: &KubeArgs, reach: &KafkaReach) -> Result<String> {
    let by_id_args = FilterArgs {
        ids: vec![args.event_id.clone()],
        ..FilterArgs::default()
    };
    let by_id = by_id_args.parse(Timestamp::now())?;
    let (found, namespace, where_) = if args.mode.direct {
        let session = Session::open(kube, reach, &args.consumer).await?;
        let where_ = format!(
            "in {} for {}",
            session.consumer.dead_letter_topic, session.consumer.name
        );
        (
            session.dead_letters(&by_id).await?,
            session.consumer.namespace.clone(),
            where_,
        )
    } else {
        let cluster = kube.connect().await?;
        let found =
            crate::in_cluster::select(&cluster, &args.consumer, &by_id_args, args.mode.timeout)
                .await?;
        (
            found,
            cluster.namespace.clone(),
            format!("for {}", args.consumer),
        )
    };
    if found.is_empty() {
        return Err(Error::NotFound {
            kind: "dead-lettered event",
            namespace,
            name: format!("{} ({where_})", args.event_id),
        });
    }
    match args.output {
        // One event is one object; the same event dead-lettered again (after a replay that
        // failed too) is a list of them.
        Format::Json | Format::Yaml if found.len() == 1 => {
            output::structured(&found[0], args.output)
        }
        Format::Json | Format::Yaml => output::structured(&found, args.output),
        Format::Table => Ok(found.iter().map(describe).collect::<Vec<_>>().join("\n")),
    }
}

/// One dead letter as `kubectl describe` would print it.
fn describe(d: &DeadLetter) -> String {
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let mut out = String::new();
    let mut field = |name: &str, value: String| out.push_str(&format!("{name:<18}{value}\n"));
    field("Event ID:", opt(&d.event_id));
    field("Type:", opt(&d.event_type));
    field("Key:", opt(&d.key));
    field("Original:", origin(d));
    field(
        "Dead letter:",
        format!("{}/{}@{}", d.topic, d.partition, d.offset),
    );
    field(
        "Attempts:",
        d.attempts.map_or_else(|| "-".into(), |a| a.to_string()),
    );
    field("Reason:", opt(&d.reason));
    field("Group:", opt(&d.group));
    field(
        "Failed at:",
        d.failed_at.map_or_else(|| "-".into(), |t| t.to_string()),
    );
    if let Some(why) = &d.copy_refused {
        field("Copy refused:", why.clone());
    }
    out.push_str("Headers:\n");
    for (k, v) in &d.headers {
        out.push_str(&format!("  {k}: {v}\n"));
    }
    out.push_str("Payload:\n");
    let payload = match &d.payload {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(v) => serde_json::to_string_pretty(v).unwrap_or_default(),
        None => "(none)".into(),
    };
    for line in payload.lines() {
        out.push_str(&format!("  {line}\n"));
    }
    out
}

/// What `dlq replay` reports.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Summary<'a> {
    consumer: String,
    dead_letter_topic: &'a str,
    dry_run: bool,
    selected: usize,
    #[serde(flatten)]
    plan: &'a Plan,
}

async fn replay(args: &ReplayArgs, kube: &KubeArgs, reach: &KafkaReach) -> Result<String> {
    let filter = args.filter.parse(Timestamp::now())?;
    if filter.is_everything() && !args.all {
        return Err(Error::usage(
            "dlq replay needs a filter (--reason, --type, --id, --topic, --since, --until) or --all",
        ));
    }
    if !args.direct {
        let cluster = kube.connect().await?;
        return crate::in_cluster::replay(&cluster, args, args.timeout).await;
    }
    let session = Session::open(kube, reach, &args.consumer).await?;
    let consumer = &session.consumer;
    let destination = match (consumer.first_delay.is_some(), args.to_source) {
        (true, false) => Destination::FirstTier,
        (true, true) => {
            return Err(Error::usage(format!(
                "{} has retry tiers: replays go to its first tier, which only its own group reads; --to-source is for consumers without tiers",
                consumer.name
            )));
        }
        (false, true) => Destination::Source,
        (false, false) => {
            return Err(Error::unusable(format!(
                "{} has no retry tier (spec.retry.delays), so a replay would have to go to its source topic, where every consumer group of that topic receives it again; pass --to-source to do that, or add a retry delay",
                consumer.name
            )));
        }
    };
    let selected = session.dead_letters(&filter).await?;
    let mut ledger_now = ledger::load(&session.cluster, consumer).await?;
    let plan = replay::plan(
        &selected,
        &consumer.target(),
        destination,
        &ledger_now,
        args.again,
        SystemTime::now(),
    );
    if !args.dry_run && !plan.sends.is_empty() {
        ledger::check_writable(&session.cluster, consumer, &ledger_now).await?;
        let secret = match destination {
            Destination::FirstTier => consumer.credential_secret.clone(),
            Destination::Source => producer_secret(&session.cluster, &plan).await?,
        };
        let producer = replay::producer(&session.kafka(&secret).await?)?;
        let mut sent = 0usize;
        let result = replay::send(&producer, &plan.sends, args.rate, |done| {
            sent += done.len();
            for c in &done {
                ledger_now.insert(&c.topic, c.partition, c.offset);
            }
            let line = format!(
                "{} replayed {sent} of {} selected events to {} at {}",
                kube.as_user.as_deref().unwrap_or("the current user"),
                plan.sends.len(),
                destination_name(destination),
                Timestamp::now()
            );
            let (cluster, ledger) = (session.cluster.clone(), ledger_now.clone());
            async move {
                ledger::save(&cluster, consumer, &ledger, &line)
                    .await
                    .map_err(|e| ferry_sidecar::dlq::Error::Unusable(e.to_string()))
            }
        })
        .await
        .map_err(Error::from);
        record_event(&session.cluster, consumer, sent, &plan, &result).await;
        result?;
    }
    let summary = Summary {
        consumer: format!("{}/{}", consumer.namespace, consumer.name),
        dead_letter_topic: &consumer.dead_letter_topic,
        dry_run: args.dry_run,
        selected: selected.len(),
        plan: &plan,
    };
    if args.output != Format::Table {
        return output::structured(&summary, args.output);
    }
    Ok(summary_text(&summary, destination))
}

fn destination_name(d: Destination) -> &'static str {
    match d {
        Destination::FirstTier => "the first retry tier",
        Destination::Source => "the source topic",
    }
}

fn summary_text(s: &Summary<'_>, destination: Destination) -> String {
    let mut out = format!(
        "{}replay of {} from {} to {}\n",
        if s.dry_run { "dry-run: " } else { "" },
        s.consumer,
        s.dead_letter_topic,
        destination_name(destination)
    );
    out.push_str(&format!("selected:           {}\n", s.selected));
    out.push_str(&format!(
        "already replayed:   {}{}\n",
        s.plan.already_replayed.len(),
        if s.plan.already_replayed.is_empty() {
            ""
        } else {
            " (skipped; --again replays them, the worker de-duplicates by event id)"
        }
    ));
    out.push_str(&format!("not replayable:     {}\n", s.plan.skipped.len()));
    for k in &s.plan.skipped {
        out.push_str(&format!(
            "  {} ({}@{}): {}\n",
            k.event_id.as_deref().unwrap_or("-"),
            k.from.partition,
            k.from.offset,
            k.reason
        ));
    }
    out.push_str(&format!(
        "{}{}\n",
        if s.dry_run {
            "would replay:       "
        } else {
            "replayed:           "
        },
        s.plan.sends.len()
    ));
    for send in &s.plan.sends {
        out.push_str(&format!(
            "  {}  {}/{}@{} -> {}/{}\n",
            send.event_id.as_deref().unwrap_or("-"),
            send.from.topic,
            send.from.partition,
            send.from.offset,
            send.topic,
            send.partition
        ));
    }
    out
}

/// The credential Secret of a producer of the one source topic the plan writes to.
async fn producer_secret(cluster: &Cluster, plan: &Plan) -> Result<String> {
    let mut topics: Vec<&str> = plan.sends.iter().map(|s| s.topic.as_str()).collect();
    topics.sort_unstable();
    topics.dedup();
    let [topic] = topics.as_slice() else {
        return Err(Error::usage(format!(
            "--to-source writes one source topic at a time (each with its producer's credential); narrow the selection with --topic (selected: {})",
            topics.join(", ")
        )));
    };
    let api: Api<EventTopic> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let all = api.list(&ListParams::default()).await.map_err(|e| {
        Error::from_kube(
            e,
            "listing EventTopics",
            format!("list on eventtopics.ferry.dev in {}", cluster.namespace),
            None,
        )
    })?;
    let producer = all
        .items
        .iter()
        .find(|t| t.kafka_topic_name() == *topic)
        .and_then(|t| t.spec.producers.first())
        .map(|p| p.service_account.clone())
        .ok_or_else(|| {
            Error::unusable(format!(
                "no EventTopic of {} declares a producer of {topic}, so no credential may write it",
                cluster.namespace
            ))
        })?;
    Ok(secret_name(&producer))
}

/// A Kubernetes Event on the EventConsumer saying what was replayed: the audit trail
/// `kubectl describe eventconsumer` shows. Best effort: a user who may replay but not create
/// Events is warned, not stopped.
async fn record_event(
    cluster: &Cluster,
    consumer: &ConsumerView,
    sent: usize,
    plan: &Plan,
    result: &Result<()>,
) {
    let (reason, type_, message) = match result {
        Ok(()) => (
            "Replayed",
            "Normal",
            format!(
                "kubectl ferry replayed {sent} dead-lettered event(s) from {} ({} already replayed, {} not replayable)",
                consumer.dead_letter_topic,
                plan.already_replayed.len(),
                plan.skipped.len()
            ),
        ),
        Err(e) => (
            "ReplayFailed",
            "Warning",
            format!("kubectl ferry replayed {sent} dead-lettered event(s), then failed: {e}"),
        ),
    };
    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::now());
    let event = Event {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}.replay.", consumer.name)),
            namespace: Some(consumer.namespace.clone()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some("ferry.dev/v1alpha1".into()),
            kind: Some("EventConsumer".into()),
            name: Some(consumer.name.clone()),
            namespace: Some(consumer.namespace.clone()),
            uid: consumer.uid.clone(),
            ..ObjectReference::default()
        },
        reason: Some(reason.into()),
        type_: Some(type_.into()),
        message: Some(message),
        source: Some(EventSource {
            component: Some(FIELD_MANAGER.into()),
            ..EventSource::default()
        }),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        count: Some(1),
        ..Event::default()
    };
    let api: Api<Event> = Api::namespaced(cluster.client.clone(), &consumer.namespace);
    if let Err(e) = api.create(&PostParams::default(), &event).await {
        eprintln!(
            "warning: the replay is recorded in ConfigMap {}, but no Event was written on EventConsumer {}/{}: {e}",
            ledger::configmap_name(&consumer.name),
            consumer.namespace,
            consumer.name
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_read_with_or_without_per_second() {
        assert_eq!(parse_rate("50"), Ok(50.0));
        assert_eq!(parse_rate("2.5/s"), Ok(2.5));
        assert!(parse_rate("0").is_err() && parse_rate("fast").is_err());
    }

    #[test]
    fn long_reasons_are_cut_to_one_line() {
        assert_eq!(truncate("a\nb", 10), "a b");
        assert_eq!(truncate("abcdefghijk", 5), "abcd…");
    }
}
