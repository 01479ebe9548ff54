//! De-duplication (DESIGN §5): with `--idempotency-database-url`, the id of every event
//! delivered for this group is stored in PostgreSQL, and an event whose id is already there is
//! skipped instead of delivered again. Rows older than the window are pruned.
//!
//! The check happens before delivery and the insert after a 2xx, so two copies of one event
//! in flight at the same moment (possible only with `ordering=unordered`, or different keys)
//! may both be delivered; with `key` or `partition` ordering copies of an event share a lane.

use std::{sync::Arc, time::Duration};

use tokio::sync::RwLock;
use tokio_postgres::{Client, NoTls};

/// The table the worker creates and owns.
pub const TABLE: &str = "ferry_worker_delivered";

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("idempotency database: {0}")]
    Database(#[from] tokio_postgres::Error),
}

/// `Result` of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The delivered-ids store of one consumer group; reconnects after a lost connection.
pub struct DedupStore {
    url: String,
    group: String,
    window: Duration,
    client: RwLock<Option<Arc<Client>>>,
}

impl DedupStore {
    /// Connects and creates the table if needed.
    pub async fn connect(url: String, group: String, window: Duration) -> Result<Self> {
        let store = Self {
            url,
            group,
            window,
            client: RwLock::new(None),
        };
        store
            .client()
            .await?
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {TABLE} (
                    group_id text NOT NULL,
                    event_id text NOT NULL,
                    delivered_at timestamptz NOT NULL DEFAULT now(),
                    PRIMARY KEY (group_id, event_id));
                 CREATE INDEX IF NOT EXISTS {TABLE}_delivered_at ON {TABLE} (delivered_at);"
            ))
            .await?;
        Ok(store)
    }

    async fn client(&self) -> Result<Arc<Client>> {
        if let Some(c) = self.client.read().await.as_ref()
            && !c.is_closed()
        {
            return Ok(c.clone());
        }
        let mut slot = self.client.write().await;
        if let Some(c) = slot.as_ref()
            && !c.is_closed()
        {
            return Ok(c.clone());
        }
        let (client, connection) = tokio_postgres::connect(&self.url, NoTls).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "idempotency database connection ended");
            }
        });
        let client = Arc::new(client);
        *slot = Some(client.clone());
        Ok(client)
    }

    /// Whether `event_id` was already delivered for this group within the window.
    pub async fn seen(&self, event_id: &str) -> Result<bool> {
        let row = self
            .client()
            .await?
            .query_opt(
                &format!(
                    "SELECT 1 FROM {TABLE} WHERE group_id = $1 AND event_id = $2
                     AND delivered_at > now() - make_interval(secs => $3)"
                ),
                &[&self.group, &event_id, &self.window.as_secs_f64()],
            )
            .await?;
        Ok(row.is_some())
    }

    /// Remembers that `event_id` was delivered.
    pub async fn remember(&self, event_id: &str) -> Result<()> {
        self.client()
            .await?
            .execute(
                &format!(
                    "INSERT INTO {TABLE} (group_id, event_id) VALUES ($1, $2)
                     ON CONFLICT (group_id, event_id) DO UPDATE SET delivered_at = now()"
                ),
                &[&self.group, &event_id],
            )
            .await?;
        Ok(())
    }

    /// Deletes this group's ids older than the window; returns how many.
    pub async fn prune(&self) -> Result<u64> {
        Ok(self
            .client()
            .await?
            .execute(
                &format!(
                    "DELETE FROM {TABLE} WHERE group_id = $1
                     AND delivered_at < now() - make_interval(secs => $2)"
                ),
                &[&self.group, &self.window.as_secs_f64()],
            )
            .await?)
    }
}
