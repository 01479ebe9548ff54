//! Shutdown is an argument (mini-redis): every long-running part takes
//! `shutdown: impl Future<Output = ()>`. Production passes [`signal`]; a part that fans one
//! stop out to several tasks keeps a `watch::Sender<bool>` and hands each task [`stopped`]
//! of a receiver; tests pass whatever future they like.

use tokio::sync::watch;

/// Completes on SIGTERM (what Kubernetes sends a pod) or Ctrl-C (a person at a terminal).
/// Should SIGTERM not be listenable (no signal driver), it says so and waits for Ctrl-C only.
pub async fn signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the process");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

/// Completes once `rx` says `true`, or once its sender is gone (nobody is left to say it, and
/// a dropped owner means the process is stopping anyway).
pub async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn stopped_waits_for_true() {
        let (tx, rx) = watch::channel(false);
        let waiting = tokio::spawn(stopped(rx));
        tx.send(false).expect("receiver alive");
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "false must not stop it");
        tx.send(true).expect("receiver alive");
        waiting.await.expect("completes on true");
    }

    #[tokio::test]
    async fn stopped_completes_when_the_sender_is_gone() {
        let (tx, rx) = watch::channel(false);
        drop(tx);
        stopped(rx).await;
    }

    #[tokio::test]
    async fn stopped_completes_at_once_when_already_true() {
        let (_tx, rx) = watch::channel(true);
        stopped(rx).await;
    }
}
