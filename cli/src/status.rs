//! `kubectl ferry status`: one screen with every EventTopic (partitions, producers, Ready),
//! EventConsumer (placement, replicas, lag, dead letters, Ready with its reason) and injected
//! pod (its Ferry containers and the relay's backlog), for a namespace or all (`-A`).
//!
//! Everything comes from the API server as the user, never from Kafka: resources and their
//! status, and the relay's backlog from its `/metrics` through the API server's pod proxy
//! (`pods/proxy`). The dead-letter count is the one the operator measures with the lag
//! (`status.deadLetters`, `?` until measured): the records the topic holds, which for a shared
//! dead-letter topic include other consumers' too (marked `~`).

use std::time::Duration;

use clap::Args;
use ferry_operator::{
    api::{Condition, ConditionStatus, EventConsumer, EventTopic},
    webhook::{annotations::INJECTED, sidecar::RELAY_CONTAINER},
};
use futures::future::join_all;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client, ResourceExt,
    api::{DynamicObject, ListParams},
    core::{ApiResource, GroupVersionKind},
};
use serde::Serialize;

use crate::{
    cluster::KubeArgs,
    error::{Error, Result},
    output::{self, Format, Paint, Tone},
};

/// How long one pod's metrics may take before its backlog shows `?`: status is a glance, not
/// a wait.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// `status`
#[derive(Args, Debug, Clone)]
pub struct StatusArgs {
    /// Every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    pub output: Format,
}

/// One EventTopic's line.
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TopicLine {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// The Kafka topic.
    pub topic: String,
    /// Partitions the Kafka topic has (status).
    pub partitions: Option<i32>,
    /// Service accounts allowed to publish.
    pub producers: Vec<String>,
    /// Its Ready condition.
    pub ready: Readiness,
}

/// One EventConsumer's line.
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerLine {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// `Deployment` or `Sidecar`.
    pub placement: String,
    /// Worker replicas wanted.
    pub replicas: Option<i32>,
    /// Worker replicas ready.
    pub ready_replicas: Option<i32>,
    /// Records not yet processed.
    pub lag: Option<i64>,
    /// Records the dead-letter topic holds, as the operator last measured (`None`: not yet).
    pub dead_letters: Option<i64>,
    /// Whether the dead-letter topic is shared with other consumers.
    pub dead_letter_shared: bool,
    /// Its Ready condition.
    pub ready: Readiness,
}

/// One injected pod's line.
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodLine {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// What the webhook injected (`ferry.dev/injected`).
    pub injected: String,
    /// The pod's phase.
    pub phase: String,
    /// Whether the pod is Ready.
    pub ready: bool,
    /// Unpublished outbox rows (the relay's gauge), if readable.
    pub relay_backlog: Option<f64>,
    /// Age of the oldest unpublished row, if readable.
    pub relay_oldest_seconds: Option<f64>,
}

/// A resource's Ready condition.
#[derive(Debug, Serialize, PartialEq, Clone)]
#[serde(rename_all = "camelCase")]
pub struct Readiness {
    /// True, False or Unknown.
    pub status: String,
    /// The condition's reason word.
    pub reason: String,
    /// The condition's sentence.
    pub message: String,
}

impl Readiness {
    /// From kstatus conditions: Ready, else `Unknown` with "no status yet".
    pub fn from_conditions(conditions: &[Condition]) -> Self {
        match conditions.iter().find(|c| c.type_ == "Ready") {
            Some(c) => Self {
                status: match c.status {
                    ConditionStatus::True => "True",
                    ConditionStatus::False => "False",
                    ConditionStatus::Unknown => "Unknown",
                }
                .into(),
                reason: c.reason.clone(),
                message: c.message.clone(),
            },
            None => Self {
                status: "Unknown".into(),
                reason: "NoStatus".into(),
                message: "the operator has not reported on it yet".into(),
            },
        }
    }

    fn cell(&self, paint: &Paint) -> String {
        let tone = match self.status.as_str() {
            "True" => Tone::Good,
            "False" => Tone::Bad,
            _ => Tone::Warn,
        };
        let text = if self.status == "True" {
            self.status.clone()
        } else if self.message.is_empty() {
            format!("{} ({})", self.status, self.reason)
        } else {
            format!("{} ({}: {})", self.status, self.reason, self.message)
        };
        paint.paint(&text, tone)
    }
}

/// The whole screen.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// Every EventTopic.
    pub event_topics: Vec<TopicLine>,
    /// Every EventConsumer.
    pub event_consumers: Vec<ConsumerLine>,
    /// Every pod the webhook injected.
    pub injected_pods: Vec<PodLine>,
}

/// Runs `status`.
pub async fn run(args: &StatusArgs, kube: &KubeArgs) -> Result<String> {
    let cluster = kube.connect().await?;
    let scope = (!args.all_namespaces).then(|| cluster.namespace.clone());
    let where_ = scope
        .as_deref()
        .map_or_else(|| "all namespaces".to_owned(), |n| format!("namespace {n}"));
    let list_err = |what: &'static str| {
        let where_ = where_.clone();
        move |e| {
            Error::from_kube(
                e,
                format!("listing {what}"),
                format!("list on {what} in {where_}"),
                None,
            )
        }
    };
    let topics: Vec<EventTopic> = api::<EventTopic>(&cluster.client, scope.as_deref())
        .list(&ListParams::default())
        .await
        .map_err(list_err("eventtopics.ferry.dev"))?
        .items;
    let gvk = GroupVersionKind::gvk("ferry.dev", "v1alpha1", "EventConsumer");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "eventconsumers");
    let raw_consumers: Vec<DynamicObject> = match scope.as_deref() {
        Some(ns) => Api::namespaced_with(cluster.client.clone(), ns, &resource),
        None => Api::all_with(cluster.client.clone(), &resource),
    }
    .list(&ListParams::default())
    .await
    .map_err(list_err("eventconsumers.ferry.dev"))?
    .items;
    let pods: Vec<Pod> = api::<Pod>(&cluster.client, scope.as_deref())
        .list(&ListParams::default())
        .await
        .map_err(list_err("pods"))?
        .items
        .into_iter()
        .filter(|p| p.annotations().contains_key(INJECTED))
        .collect();

    let event_topics = topics.iter().map(topic_line).collect();
    let consumer_lines = raw_consumers.iter().filter_map(|raw| {
        let placement = raw.data["spec"]["placement"]
            .as_str()
            .unwrap_or("Deployment")
            .to_owned();
        let mut value = raw.data.clone();
        value["metadata"] = serde_json::to_value(&raw.metadata).ok()?;
        let consumer: EventConsumer = serde_json::from_value(value).ok()?;
        Some((consumer, placement))
    });
    let event_consumers = consumer_lines
        .map(|(consumer, placement)| consumer_line(consumer, placement))
        .collect();
    let injected_pods = join_all(pods.iter().map(|p| pod_line(&cluster.client, p))).await;
    let status = Status {
        event_topics,
        event_consumers,
        injected_pods,
    };
    if args.output != Format::Table {
        return output::structured(&status, args.output);
    }
    Ok(render(&status, args.all_namespaces, &Paint::detect()))
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

fn topic_line(t: &EventTopic) -> TopicLine {
    let status = t.status.clone().unwrap_or_default();
    TopicLine {
        namespace: t.namespace().unwrap_or_default(),
        name: t.name_any(),
        topic: status
            .topic_name
            .unwrap_or_else(|| t.kafka_topic_name().to_owned()),
        partitions: status.partitions,
        producers: t
            .spec
            .producers
            .iter()
            .map(|p| p.service_account.clone())
            .collect(),
        ready: Readiness::from_conditions(&status.conditions),
    }
}

fn consumer_line(consumer: EventConsumer, placement: String) -> ConsumerLine {
    let status = consumer.status.clone().unwrap_or_default();
    let shared = status
        .topics
        .as_ref()
        .is_some_and(|t| t.dead_letter.is_some() && !t.dead_letter_managed);
    ConsumerLine {
        namespace: consumer.namespace().unwrap_or_default(),
        name: consumer.name_any(),
        placement,
        replicas: status.replicas,
        ready_replicas: status.ready_replicas,
        lag: status.lag.as_ref().map(|l| l.total),
        dead_letters: status.dead_letters,
        dead_letter_shared: shared,
        ready: Readiness::from_conditions(&status.conditions),
    }
}

async fn pod_line(client: &Client, pod: &Pod) -> PodLine {
    let status = pod.status.clone().unwrap_or_default();
    let ready = status
        .conditions
        .as_ref()
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let relay_port = pod
        .spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == RELAY_CONTAINER))
        .and_then(|c| c.ports.as_ref())
        .and_then(|ports| ports.first())
        .map(|p| p.container_port);
    let (backlog, oldest) = match relay_port {
        Some(port) => tokio::time::timeout(PROBE_TIMEOUT, relay_metrics(client, pod, port))
            .await
            .ok()
            .flatten()
            .unwrap_or((None, None)),
        None => (None, None),
    };
    PodLine {
        namespace: pod.namespace().unwrap_or_default(),
        name: pod.name_any(),
        injected: pod.annotations().get(INJECTED).cloned().unwrap_or_default(),
        phase: status.phase.unwrap_or_else(|| "Unknown".into()),
        ready,
        relay_backlog: backlog,
        relay_oldest_seconds: oldest,
    }
}

/// The relay's backlog gauges, through the API server's pod proxy.
async fn relay_metrics(
    client: &Client,
    pod: &Pod,
    port: i32,
) -> Option<(Option<f64>, Option<f64>)> {
    let path = format!(
        "/api/v1/namespaces/{}/pods/{}:{port}/proxy/metrics",
        pod.namespace()?,
        pod.name_any()
    );
    let request = http::Request::get(path).body(Vec::new()).ok()?;
    let text = client.request_text(request).await.ok()?;
    Some((
        gauge(&text, "ferry_relay_backlog_rows"),
        gauge(&text, "ferry_relay_oldest_unpublished_age_seconds"),
    ))
}

/// The value of an unlabelled gauge in a Prometheus text exposition.
pub fn gauge(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let value = rest.strip_prefix(' ').or_else(|| {
            rest.strip_prefix('{')
                .and_then(|r| r.split_once("} ").map(|(_, v)| v))
        })?;
        value.split_whitespace().next()?.parse().ok()
    })
}

/// The screen as text.
pub fn render(status: &Status, all_namespaces: bool, paint: &Paint) -> String {
    let with_ns = |ns: &str, mut row: Vec<String>| {
        if all_namespaces {
            row.insert(0, ns.to_owned());
        }
        row
    };
    let headers = |cols: &[&'static str]| {
        let mut h: Vec<&str> = cols.to_vec();
        if all_namespaces {
            h.insert(0, "namespace");
        }
        h
    };
    let opt = |v: Option<i64>| v.map_or_else(|| "-".into(), |v| v.to_string());
    let mut out = String::new();

    out.push_str("EventTopics\n");
    if status.event_topics.is_empty() {
        out.push_str("  (none)\n");
    } else {
        let rows: Vec<Vec<String>> = status
            .event_topics
            .iter()
            .map(|t| {
                with_ns(
                    &t.namespace,
                    vec![
                        t.name.clone(),
                        t.topic.clone(),
                        opt(t.partitions.map(i64::from)),
                        if t.producers.is_empty() {
                            "-".into()
                        } else {
                            t.producers.join(",")
                        },
                        t.ready.cell(paint),
                    ],
                )
            })
            .collect();
        out.push_str(&output::table(
            &headers(&["name", "topic", "partitions", "producers", "ready"]),
            &rows,
        ));
    }

    out.push_str("\nEventConsumers\n");
    if status.event_consumers.is_empty() {
        out.push_str("  (none)\n");
    } else {
        let rows: Vec<Vec<String>> = status
            .event_consumers
            .iter()
            .map(|c| {
                let lag = c.lag.map_or_else(
                    || "-".into(),
                    |l| {
                        let tone = if l > 0 { Tone::Warn } else { Tone::Good };
                        paint.paint(&l.to_string(), tone)
                    },
                );
                let dead = match c.dead_letters {
                    None => "?".into(),
                    Some(n) => {
                        let text = if c.dead_letter_shared {
                            format!("~{n}")
                        } else {
                            n.to_string()
                        };
                        paint.paint(&text, if n > 0 { Tone::Bad } else { Tone::Good })
                    }
                };
                with_ns(
                    &c.namespace,
                    vec![
                        c.name.clone(),
                        c.placement.clone(),
                        format!(
                            "{}/{}",
                            opt(c.ready_replicas.map(i64::from)),
                            opt(c.replicas.map(i64::from))
                        ),
                        lag,
                        dead,
                        c.ready.cell(paint),
                    ],
                )
            })
            .collect();
        out.push_str(&output::table(
            &headers(&[
                "name",
                "placement",
                "replicas",
                "lag",
                "dead letters",
                "ready",
            ]),
            &rows,
        ));
    }

    out.push_str("\nInjected pods\n");
    if status.injected_pods.is_empty() {
        out.push_str("  (none)\n");
    } else {
        let rows: Vec<Vec<String>> = status
            .injected_pods
            .iter()
            .map(|p| {
                with_ns(
                    &p.namespace,
                    vec![
                        p.name.clone(),
                        p.injected.clone(),
                        if p.ready {
                            paint.paint(&p.phase, Tone::Good)
                        } else {
                            paint.paint(&p.phase, Tone::Warn)
                        },
                        p.relay_backlog
                            .map_or_else(|| "-".into(), |b| format!("{b}")),
                        p.relay_oldest_seconds
                            .map_or_else(|| "-".into(), |s| output::age(s as i64)),
                    ],
                )
            })
            .collect();
        out.push_str(&output::table(
            &headers(&["name", "injected", "phase", "relay backlog", "oldest"]),
            &rows,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauges_are_read_from_the_exposition() {
        let text = "# HELP ferry_relay_backlog_rows Unpublished outbox rows\n\
                    # TYPE ferry_relay_backlog_rows gauge\n\
                    ferry_relay_backlog_rows 42\n\
                    ferry_relay_backlog_rows_other 1\n\
                    ferry_relay_oldest_unpublished_age_seconds{table=\"outbox\"} 3.5\n";
        assert_eq!(gauge(text, "ferry_relay_backlog_rows"), Some(42.0));
        assert_eq!(
            gauge(text, "ferry_relay_oldest_unpublished_age_seconds"),
            Some(3.5)
        );
        assert_eq!(gauge(text, "missing"), None);
    }

    #[test]
    fn not_ready_shows_its_reason_and_message() {
        let r = Readiness {
            status: "False".into(),
            reason: "Conflict".into(),
            message: "topic x is owned by y".into(),
        };
        assert_eq!(
            r.cell(&Paint::off()),
            "False (Conflict: topic x is owned by y)"
        );
        assert_eq!(Readiness::from_conditions(&[]).status, "Unknown");
    }
}
