//! De-duplication (DESIGN §5): with `--idempotency-database-url`, the id of every event
//! delivered for this group is stored in PostgreSQL, and an event whose id is already there is
//! skipped instead of delivered again. Rows older than the window are pruned.
//!
//! Check, delivery and insert are one claim, so two copies of one event in flight at the same
//! moment (different keys or partitions, `ordering=unordered`, or two replicas) cannot both be
//! delivered: copies in this process queue on an in-process lock per id; copies in other
//! processes on a PostgreSQL session advisory lock on (group, id), which the server releases by
//! itself when a worker dies (no lease to expire, no stale claim after `kill -9`). The holder
//! checks the table, delivers, inserts the id and only then unlocks, so the next copy sees it.
//! If the store's connection is lost while a claim is held, its advisory lock goes with it: a
//! copy in another process may then run concurrently once (the in-process lock still holds).

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use ferry_common::backoff;
use tokio::sync::{Notify, RwLock};
use tokio_postgres::{Client, NoTls};

/// The table the worker creates and owns.
pub const TABLE: &str = "ferry_worker_delivered";

/// How often the store is pruned (a guess: ids expire by the day — `--idempotency-window`
/// defaults to 7 d — so hourly keeps the table within an hour of its window at one query).
const PRUNE_INTERVAL: Duration = Duration::from_secs(3600);

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
    /// Ids claimed by a delivery task of this process.
    claimed: Mutex<HashSet<String>>,
    /// Wakes tasks waiting for an id of `claimed` to be released.
    released: Notify,
}

/// The outcome of [`DedupStore::claim`].
pub enum Claimed<'a> {
    /// Not delivered yet, and now ours until [`Claim::release`].
    Fresh(Claim<'a>),
    /// Already delivered for this group within the window.
    Duplicate,
    /// `still_wanted` said stop while another worker held the id.
    GaveUp,
}

/// An id this task alone may deliver; release it (after [`Claim::delivered`] if it was).
pub struct Claim<'a> {
    store: &'a DedupStore,
    id: String,
    /// The session holding the advisory lock; unlocking must use it.
    client: Arc<Client>,
    released: bool,
}

const LOCK: &str = "SELECT pg_try_advisory_lock(hashtextextended($1 || '/' || $2, 0))";
const UNLOCK: &str = "SELECT pg_advisory_unlock(hashtextextended($1 || '/' || $2, 0))";

impl DedupStore {
    /// Connects and creates the table if needed.
    pub async fn connect(url: String, group: String, window: Duration) -> Result<Self> {
        let store = Self {
            url,
            group,
            window,
            client: RwLock::new(None),
            claimed: Mutex::default(),
            released: Notify::new(),
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

    fn claimed(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        // The set holds plain strings; a panic elsewhere cannot leave it inconsistent.
        self.claimed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until no other task of this process holds `id`, then holds it.
    async fn claim_locally(&self, id: &str) {
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if self.claimed().insert(id.to_owned()) {
                return;
            }
            released.await;
        }
    }

    fn release_locally(&self, id: &str) {
        self.claimed().remove(id);
        self.released.notify_waiters();
    }

    /// Claims `id` for delivery: waits while another task or worker holds it, then says
    /// whether it was delivered already. `still_wanted` is asked between waits.
    pub async fn claim(&self, id: &str, still_wanted: impl Fn() -> bool) -> Result<Claimed<'_>> {
        self.claim_locally(id).await;
        match self.claim_in_database(id, still_wanted).await {
            Ok(Some(client)) => {
                let claim = Claim {
                    store: self,
                    id: id.to_owned(),
                    client,
                    released: false,
                };
                match claim.seen().await {
                    Ok(false) => Ok(Claimed::Fresh(claim)),
                    Ok(true) => {
                        claim.release().await;
                        Ok(Claimed::Duplicate)
                    }
                    Err(e) => Err(e),
                }
            }
            Ok(None) => {
                self.release_locally(id);
                Ok(Claimed::GaveUp)
            }
            Err(e) => {
                self.release_locally(id);
                Err(e)
            }
        }
    }

    async fn claim_in_database(
        &self,
        id: &str,
        still_wanted: impl Fn() -> bool,
    ) -> Result<Option<Arc<Client>>> {
        let mut waits = backoff::dedup_claim();
        loop {
            let client = self.client().await?;
            let row = client.query_one(LOCK, &[&self.group, &id]).await?;
            if row.get::<_, bool>(0) {
                return Ok(Some(client));
            }
            tracing::debug!(id, "event id claimed by another worker; waiting");
            tokio::time::sleep(waits.next().unwrap_or(backoff::DEDUP_CLAIM_MAX)).await;
            if !still_wanted() {
                return Ok(None);
            }
        }
    }

    /// Prunes every [`PRUNE_INTERVAL`], for ever (spawned once at start when de-duplication is
    /// on); a failed prune is logged and tried again at the next interval.
    pub async fn prune_forever(&self) {
        let mut every = tokio::time::interval(PRUNE_INTERVAL);
        loop {
            every.tick().await;
            match self.prune().await {
                Ok(n) => tracing::info!(pruned = n, "idempotency store pruned"),
                Err(e) => tracing::warn!(error = %e, "idempotency store prune failed"),
            }
        }
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

impl Claim<'_> {
    /// Whether the id was already delivered for this group within the window.
    async fn seen(&self) -> Result<bool> {
        let row = self
            .client
            .query_opt(
                &format!(
                    "SELECT 1 FROM {TABLE} WHERE group_id = $1 AND event_id = $2
                     AND delivered_at > now() - make_interval(secs => $3)"
                ),
                &[
                    &self.store.group,
                    &self.id,
                    &self.store.window.as_secs_f64(),
                ],
            )
            .await?;
        Ok(row.is_some())
    }

    /// Remembers that the id was delivered (before the claim is released).
    pub async fn delivered(&self) -> Result<()> {
        self.client
            .execute(
                &format!(
                    "INSERT INTO {TABLE} (group_id, event_id) VALUES ($1, $2)
                     ON CONFLICT (group_id, event_id) DO UPDATE SET delivered_at = now()"
                ),
                &[&self.store.group, &self.id],
            )
            .await?;
        Ok(())
    }

    /// Lets the next copy of the id go.
    pub async fn release(mut self) {
        self.released = true;
        if let Err(e) = self
            .client
            .query_one(UNLOCK, &[&self.store.group, &self.id])
            .await
        {
            // The session is gone, and its advisory lock with it.
            tracing::debug!(id = %self.id, error = %e, "advisory unlock failed");
        }
        self.store.release_locally(&self.id);
    }
}

impl Drop for Claim<'_> {
    /// A claim dropped unreleased (its task was cancelled) is released in the background.
    fn drop(&mut self) {
        if self.released {
            return;
        }
        self.store.release_locally(&self.id);
        let client = self.client.clone();
        let (group, id) = (self.store.group.clone(), self.id.clone());
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = client.query_one(UNLOCK, &[&group, &id]).await;
            });
        }
    }
}
