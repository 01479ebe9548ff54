//! The leader's housekeeping, off the publishing path: refreshing the backlog gauges and
//! deleting published rows past `--published-retention`, on a database session of its own.
//!
//! Both statements can take a while on a big table (the backlog count walks every unpublished
//! row; right after a large drain, before autovacuum, the planner may even scan the table).
//! Run between chunks, a 100 ms count every 5 s stalled publishing and set the p99 of the
//! commit→ack latency; here it only delays the next refresh.

use std::time::{Duration, Instant};

use super::{
    config::Disposal,
    error::Result,
    metrics::Metrics,
    outbox::{Outbox, TableInfo},
    session,
};

/// How often the leader refreshes the backlog gauges (one `count(*)` on the backlog): a third
/// of the 15 s scrape interval of Prometheus' example configuration, so a scrape sees a value
/// at most 5 s old, at one count every 5 s on the service's database.
pub const GAUGE_REFRESH: Duration = Duration::from_secs(5);

/// Runs until aborted (the caller aborts it when it stops leading). A failure is logged and
/// retried after [`GAUGE_REFRESH`]; the publishing path notices a lost database by itself.
pub async fn run(url: String, table: TableInfo, disposal: Disposal, metrics: Metrics) {
    loop {
        if let Err(error) = refresh_until_failure(&url, &table, disposal, &metrics).await {
            tracing::warn!(%error, kind = error.metric_label(), "relay housekeeping failed; retrying");
        }
        tokio::time::sleep(GAUGE_REFRESH).await;
    }
}

async fn refresh_until_failure(
    url: &str,
    table: &TableInfo,
    disposal: Disposal,
    metrics: &Metrics,
) -> Result<()> {
    let session = session::connect(url, None).await?;
    let outbox =
        Outbox::prepare(session.client, table.clone(), disposal == Disposal::Delete).await?;
    let mut next_sweep = Instant::now();
    loop {
        let (rows, age) = outbox.backlog().await?;
        metrics.backlog_rows.set(rows);
        metrics.oldest_unpublished_age.set(age);
        if let Disposal::MarkThenDelete(age) = disposal
            && Instant::now() >= next_sweep
        {
            let deleted = outbox.delete_published_before(age).await?;
            if deleted > 0 {
                tracing::info!(deleted, "deleted published rows past retention");
            }
            next_sweep = Instant::now() + sweep_interval(age);
        }
        tokio::time::sleep(GAUGE_REFRESH).await;
    }
}

/// How often the retention sweep runs: a tenth of the retention, between one second and one
/// minute (a short retention in a test is honoured within a second; a week-long one costs one
/// sweep a minute).
fn sweep_interval(retention: Duration) -> Duration {
    (retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweeps_follow_the_retention_within_bounds() {
        assert_eq!(
            sweep_interval(Duration::from_secs(2)),
            Duration::from_secs(1)
        );
        assert_eq!(
            sweep_interval(Duration::from_secs(100)),
            Duration::from_secs(10)
        );
        assert_eq!(
            sweep_interval(Duration::from_secs(7 * 86_400)),
            Duration::from_secs(60)
        );
    }
}
