//! Leadership: exactly one relay per outbox table publishes, chosen by a PostgreSQL
//! session-level advisory lock held on a session of its own.
//!
//! The lock lives as long as the session: when the leader dies (kill -9, node loss, database
//! restart), PostgreSQL drops the session and the lock with it, and a standby that retries
//! every [`STANDBY_RETRY`] takes over. A leader pings its lock session every [`LOCK_PING`]
//! and stops publishing the moment the session is gone, so two relays never publish at once
//! for longer than one ping.

use std::time::Duration;

use tokio::sync::watch;

use super::{
    error::{Error, Result},
    session,
};

/// How often a standby tries to take the lock: the "takes over within seconds" of DESIGN §4.
pub const STANDBY_RETRY: Duration = Duration::from_secs(1);

/// How often the leader checks that its lock session is alive: as often as a standby tries
/// the lock ([`STANDBY_RETRY`]), so a leader that lost it stops publishing about as soon as
/// another can take over (docs/outbox.md, "Several replicas").
pub const LOCK_PING: Duration = Duration::from_secs(1);

/// How long a ping may take before the session counts as lost: three pings' worth, so one
/// slow answer from a busy database does not end a leadership, and still well inside the
/// 6 s after which the sessions' TCP settings (`session.rs`) drop a silent peer.
const PING_TIMEOUT: Duration = Duration::from_secs(3);

/// The upper 32 bits of Ferry's advisory-lock keys ("FERY"), so they do not collide with
/// the service's own advisory locks, which rarely use 64-bit keys.
const LOCK_NAMESPACE: i64 = 0x4645_5259;

/// The advisory-lock key of the outbox table with OID `oid`.
pub fn lock_key(oid: u32) -> i64 {
    (LOCK_NAMESPACE << 32) | i64::from(oid)
}

/// A session that competes for the lock.
pub struct Candidate {
    session: session::Session,
    key: i64,
}

/// Held leadership; dropping it closes the session and so releases the lock.
pub struct Leadership {
    /// Becomes `true` once the lock session is gone.
    pub lost: watch::Receiver<bool>,
    _pinger: tokio::task::JoinHandle<()>,
}

impl Candidate {
    /// Opens the lock session.
    pub async fn connect(url: &str, key: i64) -> Result<Self> {
        Ok(Self {
            session: session::connect(url, None).await?,
            key,
        })
    }

    /// Tries once to take the lock; `Ok(self)` back when another relay holds it.
    pub async fn try_lead(self) -> Result<std::result::Result<Leadership, Self>> {
        let row = self
            .session
            .client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&self.key])
            .await
            .map_err(Error::Database)?;
        if !row.get::<_, bool>(0) {
            return Ok(Err(self));
        }
        let (lost_tx, lost) = watch::channel(false);
        let session::Session { client, mut closed } = self.session;
        let pinger = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = closed.changed() => break,
                    () = tokio::time::sleep(LOCK_PING) => {}
                }
                match tokio::time::timeout(PING_TIMEOUT, client.simple_query("SELECT 1")).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => {
                        tracing::warn!(%error, "leadership lock session failed");
                        break;
                    }
                    Err(_) => {
                        tracing::warn!("leadership lock session stopped answering");
                        break;
                    }
                }
            }
            let _ = lost_tx.send(true);
            // The client (and with it the session and the lock) is dropped here.
        });
        Ok(Ok(Leadership {
            lost,
            _pinger: pinger,
        }))
    }

    /// Whether the lock session has ended.
    pub fn is_closed(&self) -> bool {
        *self.session.closed.borrow()
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        self._pinger.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_keys_are_namespaced_and_distinct_per_table() {
        assert_ne!(lock_key(16_384), lock_key(16_385));
        assert_eq!(lock_key(1) >> 32, LOCK_NAMESPACE);
        assert_eq!(lock_key(u32::MAX) & 0xffff_ffff, i64::from(u32::MAX));
    }
}
