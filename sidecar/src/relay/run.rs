//! Start-up and the session loop of `ferry-sidecar relay`: check the table once the database
//! answers, serve telemetry, create the publisher, then lead or stand by session after
//! session (`leading.rs`), reconnecting with backoff until shutdown.

use std::time::{Duration, Instant};

use ferry_common::{
    backoff::{self, RELAY_RECONNECT_MAX},
    shutdown::stopped,
    telemetry::{Health, TelemetryServer},
};
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use super::{
    config::RelayArgs,
    error::{Error, Result},
    leading::Relay,
    metrics::Metrics,
    outbox::{self, TableInfo},
    publish::Publisher,
    session,
};

/// How long shutdown waits for anything left in the producer's queue (batches already awaited
/// their reports; this only covers stray dead-letter copies). Well inside Kubernetes' default
/// 30 s termination grace period.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(5);

/// Runs the relay until `shutdown` completes (then finishes the batch in flight and returns).
/// Fails at start when the table is missing or misshapen; later database and Kafka failures
/// are retried, never fatal.
pub async fn run(
    args: RelayArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let disposal = args.disposal();
    let RelayArgs {
        database_url,
        outbox_table,
        dead_letter_topic,
        contracts_dir,
        batch_size,
        idle_poll_interval,
        notify,
        delete_published: _,
        published_retention: _,
        metrics_addr,
        kafka,
        log: _,
        trace: _,
    } = args;
    let database_url = database_url.into_exposed();
    let (stop_tx, stop) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });

    // A wrong table is a configuration error: say so once, clearly, and exit. A database
    // that is not reachable yet (the pod started first) is waited for.
    let Some(table) = inspect_when_reachable(&database_url, &outbox_table, &stop).await? else {
        return Ok(());
    };
    if dead_letter_topic.is_none() && !table.has_error_column {
        return Err(Error::NoErrorColumn(table.name));
    }

    let mut registry = Registry::with_prefix("ferry");
    let metrics = Metrics::register(&mut registry);
    let health = Health::default();
    let server = TelemetryServer::bind(metrics_addr, registry, health.clone()).await?;
    let server_stop = stopped(stop.clone());
    let server_task = tokio::spawn(server.serve(server_stop));
    let publisher = Publisher::new(
        kafka.client_config()?,
        dead_letter_topic,
        table.name.clone(),
        contracts_dir.map(crate::contracts::watch),
    )?;
    publisher.warm_up();
    tracing::info!(table = %table.name, batch_size, notify, "outbox relay starting");

    let mut relay = Relay {
        database_url,
        table,
        batch_size,
        idle_poll_interval,
        notify,
        disposal,
        publisher,
        metrics,
        health,
        stop,
    };
    let mut reconnect = backoff::relay_reconnect();
    while !relay.stopping() {
        let started = Instant::now();
        let result = relay.lead_or_stand_by().await;
        relay.health.set_ready(false);
        relay.metrics.leader.set(0);
        match result {
            Ok(()) => break,
            Err(error) => {
                if started.elapsed() > RELAY_RECONNECT_MAX * 2 {
                    reconnect = backoff::relay_reconnect();
                }
                let wait = reconnect.next().unwrap_or(RELAY_RECONNECT_MAX);
                tracing::warn!(%error, kind = error.metric_label(), retry_in_ms = wait.as_millis() as u64, "relay session failed; reconnecting");
                let mut stop = relay.stop.clone();
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => {}
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
    relay.publisher.flush(SHUTDOWN_FLUSH);
    tracing::info!("outbox relay stopped");
    let _ = server_task.await;
    Ok(())
}

/// Checks the table's shape as soon as the database answers; `None` if shut down first.
async fn inspect_when_reachable(
    url: &str,
    table: &str,
    stop: &watch::Receiver<bool>,
) -> Result<Option<TableInfo>> {
    let mut reconnect = backoff::relay_reconnect();
    loop {
        let inspected = match session::connect(url, None).await {
            Ok(check) => outbox::inspect(&check.client, table).await,
            Err(e) => Err(e),
        };
        match inspected {
            Ok(info) => return Ok(Some(info)),
            Err(error @ (Error::Connect(_) | Error::Database(_))) => {
                let wait = reconnect.next().unwrap_or(RELAY_RECONNECT_MAX);
                tracing::warn!(%error, retry_in_ms = wait.as_millis() as u64, "cannot check the outbox table yet");
                let mut stop = stop.clone();
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => return Ok(None),
                    () = tokio::time::sleep(wait) => {}
                }
            }
            Err(error) => return Err(error),
        }
    }
}
