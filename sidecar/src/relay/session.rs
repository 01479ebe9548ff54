//! PostgreSQL sessions of the relay: one holds the leadership lock, one reads rows, one marks
//! them, one does the housekeeping.
//! Each is driven by a background task that reports when the session ends (so a leader that
//! lost its lock session stops at once) and forwards `NOTIFY` wake-ups.

use std::sync::Arc;

use futures::StreamExt;
use tokio::sync::{Notify, watch};
use tokio_postgres::{AsyncMessage, Client, NoTls};

use super::{Error, Result};

/// A connected session.
pub struct Session {
    /// The client that sends statements.
    pub client: Client,
    /// Becomes `true` when the connection has ended (server gone, network cut, killed).
    pub closed: watch::Receiver<bool>,
}

/// Connects to `url`; notifications received on the session wake `wake` (if given).
pub async fn connect(url: &str, wake: Option<Arc<Notify>>) -> Result<Session> {
    let (client, mut connection) = tokio_postgres::connect(url, NoTls)
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
