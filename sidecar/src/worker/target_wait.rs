//! `--wait-for-target`: before the worker joins its consumer group, wait until its service
//! accepts TCP connections.
//!
//! An injected worker is a native sidecar, so it starts before the service's container; the
//! records it would read while the service boots would burn their in-process attempts and
//! land in a retry tier or the dead-letter topic for no fault of theirs. Waiting costs nothing
//! (no partitions are held yet, so no other worker waits on this one).

use std::{future::Future, time::Duration};

use hyper::Uri;
use tokio::net::TcpStream;

use super::error::{Error, Result};

/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// `host:port` of an `http://` URL (port 80 when the URL has none).
pub fn authority(url: &str) -> Result<String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| Error::TargetUrl(format!("{url}: {e}")))?;
    let host = uri
        .host()
        .ok_or_else(|| Error::TargetUrl(format!("{url}: no host")))?;
    Ok(format!("{host}:{}", uri.port_u16().unwrap_or(80)))
}

/// Returns once `url`'s host accepts a connection, or `false` if `shutdown` came first.
pub async fn wait(url: &str, shutdown: impl Future<Output = ()>) -> Result<bool> {
    let authority = authority(url)?;
    let attempts = async {
        let mut waits = ferry_common::backoff::target_wait();
        let mut logged = false;
        loop {
            match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&authority)).await {
                Ok(Ok(_)) => return,
                Ok(Err(e)) if !logged => {
                    tracing::info!(target = %authority, error = %e, "waiting for the service to accept connections before joining the group");
                    logged = true;
                }
                _ => {}
            }
            tokio::time::sleep(waits.next().unwrap_or(Duration::from_secs(2))).await;
        }
    };
    tokio::select! {
        () = attempts => Ok(true),
        () = shutdown => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_authority_defaults_to_port_80() {
        assert_eq!(
            authority("http://127.0.0.1:8000/events").ok(),
            Some("127.0.0.1:8000".into())
        );
        assert_eq!(
            authority("http://svc.ns.svc/").ok(),
            Some("svc.ns.svc:80".into())
        );
        assert!(authority("not a url").is_err());
    }

    #[tokio::test]
    async fn it_returns_once_a_listener_appears_and_gives_up_on_shutdown() {
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            probe.local_addr().expect("addr").port()
        };
        let url = format!("http://127.0.0.1:{port}/");
        // Nothing listens: shutdown ends the wait.
        let gave_up = wait(&url, tokio::time::sleep(Duration::from_millis(600))).await;
        assert_eq!(gave_up.ok(), Some(false));
        // A listener appears while waiting: the wait ends without shutdown.
        let listen = async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            tokio::net::TcpListener::bind(("127.0.0.1", port))
                .await
                .expect("bind")
        };
        let (waited, _listener) = tokio::join!(wait(&url, std::future::pending()), listen);
        assert_eq!(waited.ok(), Some(true));
    }
}
