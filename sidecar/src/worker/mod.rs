//! `ferry-sidecar worker`: Kafka → the service over HTTP (DESIGN §5).
//!
//! ```text
//!  Kafka ──recv──▶ intake (per partition; tier partitions held until due, paused meanwhile)
//!                    │ admit while the uncommitted window < --max-in-flight
//!                    ▼
//!                 scheduler (lanes: partition | partition+key | none)
//!                    │ one running record per lane
//!                    ▼
//!                 delivery tasks ── HTTP ──▶ service
//!                    │ or copy ──▶ retry tier / dead-letter topic (acked by Kafka)
//!                    ▼
//!                 assignment windows ──watermark──▶ commit
//! ```
//!
//! The [`run_loop`] owns the [`intake`], the [`scheduler`] and the key-order bookkeeping
//! ([`lanes`], [`retry`]'s parking, [`scan`]); delivery tasks ([`process`], [`delivery`],
//! [`dedup`], [`copy`]) report back over a channel and mark their records done in the shared
//! [`assignment`], whose windows ([`watermark`]) give what [`commit`] commits. The loop always
//! keeps polling the [`consumer`] (librdkafka serves rebalance callbacks inside the poll);
//! partitions whose intake is full are paused. [`layout`] and [`rebuild`] keep ordering through
//! the retry tiers; [`finish`] logs and counts how each record ended; [`trace`] makes a span of each attempt.
//!
//! This root only wires: [`run`] builds the parts from the flags and runs the loop until
//! shutdown.

pub mod assignment;
pub mod commit;
pub mod config;
pub mod consumer;
pub mod copy;
pub mod dedup;
pub mod delivery;
pub mod error;
pub mod finish;
pub mod intake;
pub mod lanes;
pub mod layout;
pub mod metrics;
pub mod process;
pub mod rebuild;
pub mod retry;
pub mod run_loop;
pub mod scan;
pub mod scheduler;
pub mod target_wait;
pub mod trace;
pub mod watermark;

use std::sync::Arc;

use ferry_common::{
    shutdown::stopped,
    telemetry::{Health, TelemetryServer},
};
use rdkafka::consumer::{Consumer, StreamConsumer};
use tokio::sync::watch;

pub use self::error::{Error, Result};
use self::{
    assignment::Assignment,
    config::{Ordering, WorkerArgs},
    consumer::WorkerContext,
    dedup::DedupStore,
    delivery::Delivery,
    metrics::Metrics,
    process::Context,
    retry::Tiers,
    run_loop::{Parts, RunLoop},
};

/// Runs the worker until `shutdown` completes, then drains and commits.
pub async fn run(args: WorkerArgs, shutdown: impl Future<Output = ()>) -> Result<()> {
    if args.max_in_flight == 0 {
        return Err(Error::MaxInFlight);
    }
    let mut registry = prometheus_client::registry::Registry::with_prefix("ferry");
    let metrics = Metrics::register(&mut registry);
    let health = Health::default();
    let server = TelemetryServer::bind(args.metrics_addr, registry, health.clone()).await?;
    // Stopped last, after the drain: `/metrics` stays up while in-flight work finishes.
    let (stop_server, server_stopped) = watch::channel(false);
    let server = tokio::spawn(server.serve(stopped(server_stopped)));

    let tiers = Tiers::new(&args.topics, &args.group, &args.retry_delays);
    let ordered = args.ordering != Ordering::Unordered;
    if let Some(refused) =
        layout::refused_options(ordered && !tiers.is_empty(), &args.kafka.options)
    {
        return Err(Error::Layout(refused));
    }
    let assignment = Arc::new(Assignment::new(args.drain_timeout, metrics.clone()));
    let base = args.kafka.client_config()?;
    let consumer: StreamConsumer<WorkerContext> = consumer::settings(&base, &args)
        .create_with_context(WorkerContext {
            assignment: assignment.clone(),
        })?;
    layout::check_tiers(&consumer, &tiers, &args.topics, ordered)?;
    let producer =
        copy::producer(&base, &tiers, &args.dead_letter_topic, &args.kafka.options).await?;
    let dedup = match &args.idempotency_database_url {
        Some(url) => Some(
            DedupStore::connect(
                url.expose().to_owned(),
                args.group.clone(),
                args.idempotency_window,
            )
            .await?,
        ),
        None => None,
    };
    let context = Arc::new(Context {
        group: args.group.clone(),
        dead_letter_topic: args.dead_letter_topic.clone(),
        tiers: tiers.clone(),
        delivery: Delivery::new(args.target_url.clone(), args.timeout, args.max_connections)?,
        producer,
        dedup,
        attempts: args.retry_attempts,
        backoff: (args.retry_backoff_initial, args.retry_backoff_max),
        assignment: assignment.clone(),
        metrics: metrics.clone(),
        contracts: args.contracts_dir.clone().map(crate::contracts::watch),
    });
    if context.dedup.is_some() {
        let context = context.clone();
        tokio::spawn(async move {
            if let Some(dedup) = &context.dedup {
                dedup.prune_forever().await;
            }
        });
    }

    tokio::pin!(shutdown);
    if args.wait_for_target && !target_wait::wait(&args.target_url, &mut shutdown).await? {
        let _ = stop_server.send(true);
        tracing::info!("worker stopped before its service accepted connections");
        return Ok(());
    }
    let topics: Vec<String> = tiers.subscriptions();
    let topic_refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topic_refs)?;
    health.set_ready(true);
    tracing::info!(topics = ?topics, group = %args.group, ordering = ?args.ordering, max_in_flight = args.max_in_flight, "worker started");

    let mut run_loop = RunLoop::new(Parts {
        consumer: Arc::new(consumer),
        context,
        assignment,
        base,
        ordering: args.ordering,
        max_in_flight: args.max_in_flight,
        scan_timeout: args.tier_scan_timeout,
        metrics,
    });
    // The run loop is a task on the runtime's worker threads rather than running on the
    // thread that awaits `run` (the main thread, under `#[tokio::main]`): the deliveries it
    // spawns and the reports they send then stay in the workers' local queues instead of
    // waking another thread for every record.
    let (stop, loop_stopped) = watch::channel(false);
    let drain_timeout = args.drain_timeout;
    let mut looping = tokio::spawn(async move {
        run_loop.run(stopped(loop_stopped)).await;
        run_loop.drain(drain_timeout).await;
        run_loop
    });
    let run_loop = tokio::select! {
        () = &mut shutdown => {
            let _ = stop.send(true);
            looping.await
        }
        joined = &mut looping => joined,
    }?;
    health.set_ready(false);
    run_loop.assignment().close();
    drop(run_loop);
    let _ = stop_server.send(true);
    if let Ok(Err(e)) = server.await {
        tracing::warn!(error = %e, "telemetry server stopped with an error");
    }
    tracing::info!("worker stopped");
    Ok(())
}
