//! PostgreSQL sessions of the relay: one holds the leadership lock, one reads rows, one marks
//! them, one does the housekeeping.
//! Each is driven by a background task that reports when the session ends (so a leader that
//! lost its lock session stops at once) and forwards `NOTIFY` wake-ups.
//!
//! A host that disappears without closing its connections (node lost, network cut) leaves its
//! sessions open on the server, and with them the leader's advisory lock, until PostgreSQL
//! sees them dead: by default only after the kernel's two hours of keepalive silence. So
//! every session probes both ways within seconds: TCP keepalive and `TCP_USER_TIMEOUT` on the
//! relay's socket, and the same through PostgreSQL's `tcp_keepalives_*` and
//! `tcp_user_timeout` settings on the server's side of it ([`liveness`]).

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use tokio::sync::{Notify, watch};
use tokio_postgres::{AsyncMessage, Client, Config, NoTls};

use super::error::{Error, Result};

/// Idle time before the first keepalive probe, on both ends of a session.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(3);
/// Time between keepalive probes.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
/// Unanswered probes after which a session is dead: with [`KEEPALIVE_IDLE`] and
/// [`KEEPALIVE_INTERVAL`], a silent peer is noticed about 6 s after it went silent.
pub const KEEPALIVE_COUNT: u32 = 3;
/// How long sent data may stay unacknowledged (and, on Linux, probes unanswered) before the
/// kernel drops the connection; bounds a write into a vanished peer the same way.
pub const TCP_USER_TIMEOUT: Duration = Duration::from_secs(6);

/// tokio-postgres' default keepalive idle time (libpq's too), used to tell whether the DSN
/// chose its own.
const DEFAULT_KEEPALIVE_IDLE: Duration = Duration::from_secs(2 * 60 * 60);

/// `url` with the relay's liveness settings wherever the DSN does not set its own: client-side
/// TCP keepalive and user timeout, and the server-side settings as startup options.
pub fn liveness(url: &str) -> Result<Config> {
    let mut config: Config = url.parse().map_err(Error::Connect)?;
    config.keepalives(true);
    if config.get_keepalives_idle() == DEFAULT_KEEPALIVE_IDLE {
        config.keepalives_idle(KEEPALIVE_IDLE);
    }
    if config.get_keepalives_interval().is_none() {
        config.keepalives_interval(KEEPALIVE_INTERVAL);
    }
    if config.get_keepalives_retries().is_none() {
        config.keepalives_retries(KEEPALIVE_COUNT);
    }
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(TCP_USER_TIMEOUT);
    }
    let mut options = config.get_options().unwrap_or_default().to_owned();
    let server = [
        ("tcp_keepalives_idle", KEEPALIVE_IDLE.as_secs().to_string()),
        (
            "tcp_keepalives_interval",
            KEEPALIVE_INTERVAL.as_secs().to_string(),
        ),
        ("tcp_keepalives_count", KEEPALIVE_COUNT.to_string()),
        ("tcp_user_timeout", TCP_USER_TIMEOUT.as_millis().to_string()),
    ];
    for (name, value) in server {
        if !options.contains(name) {
            options.push_str(&format!(" -c {name}={value}"));
        }
    }
    config.options(options.trim_start());
    Ok(config)
}

/// A connected session.
pub struct Session {
    /// The client that sends statements.
    pub client: Client,
    /// Becomes `true` when the connection has ended (server gone, network cut, killed).
    pub closed: watch::Receiver<bool>,
}

/// Connects to `url`; notifications received on the session wake `wake` (if given).
pub async fn connect(url: &str, wake: Option<Arc<Notify>>) -> Result<Session> {
    let (client, mut connection) = liveness(url)?
        .connect(NoTls)
        .await
        .map_err(Error::Connect)?;
    let (closed_tx, closed) = watch::channel(false);
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(_)) => {
                    if let Some(wake) = &wake {
                        wake.notify_one();
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%error, "database session ended");
                    break;
                }
            }
        }
        let _ = closed_tx.send(true);
    });
    Ok(Session { client, closed })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_probe_liveness_both_ways_unless_the_dsn_says_otherwise() {
        let config = liveness("postgresql://u@h/db").expect("valid");
        assert_eq!(config.get_keepalives_idle(), KEEPALIVE_IDLE);
        assert_eq!(config.get_keepalives_interval(), Some(KEEPALIVE_INTERVAL));
        assert_eq!(config.get_keepalives_retries(), Some(KEEPALIVE_COUNT));
        assert_eq!(config.get_tcp_user_timeout(), Some(&TCP_USER_TIMEOUT));
        assert_eq!(
            config.get_options(),
            Some(
                "-c tcp_keepalives_idle=3 -c tcp_keepalives_interval=1 -c tcp_keepalives_count=3 -c tcp_user_timeout=6000"
            )
        );
        let own = liveness(
            "postgresql://u@h/db?keepalives_idle=60&tcp_user_timeout=30&options=-c%20tcp_user_timeout%3D1000",
        )
        .expect("valid");
        assert_eq!(own.get_keepalives_idle(), Duration::from_secs(60));
        assert_eq!(own.get_tcp_user_timeout(), Some(&Duration::from_secs(30)));
        let options = own.get_options().expect("options");
        assert!(options.starts_with("-c tcp_user_timeout=1000"), "{options}");
        assert_eq!(options.matches("tcp_user_timeout").count(), 1, "{options}");
    }
}
