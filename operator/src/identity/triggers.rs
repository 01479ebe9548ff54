//! What wakes the identity controller: any change to an EventTopic, an EventConsumer or a
//! Ferry credential Secret in scope, settled so a burst of changes costs one pass.

use std::time::Duration;

use futures::{Stream, StreamExt, stream};
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::{WatchStreamExt, watcher};

use super::{Context, credentials};

/// After a change, wait this long for more, so a `kubectl apply -f dir/` of many resources
/// costs one pass, not one per resource (a few hundred ms covers one client's burst of
/// requests).
pub const SETTLE: Duration = Duration::from_millis(300);

/// One trigger per settled burst of changes in scope: the shared caches' changes (deletions
/// too: an EventTopic without a finalizer is gone at once, and its ACLs go with it) and the
/// credential Secrets'.
pub fn triggers(ctx: &Context) -> impl Stream<Item = ()> + Send + 'static {
    let secrets =
        watcher::Config::default().labels(&format!("{}=scram", credentials::CREDENTIAL_LABEL));
    let changes = stream::select_all([
        ctx.caches.topics.subscribe().map(|_| ()).boxed(),
        ctx.caches.consumers.subscribe().map(|_| ()).boxed(),
        watcher(ctx.api::<Secret>(), secrets)
            .default_backoff()
            .map(|_| ())
            .boxed(),
    ]);
    settled(changes, SETTLE)
}

/// Yields once per burst of `changes`: at the first change of a burst, waits `window` (taking
/// in whatever else arrives), then yields. A fixed window, not one restarted by every change,
/// so a steady stream of changes (status updates) cannot hold passes off for ever.
pub fn settled<S>(changes: S, window: Duration) -> impl Stream<Item = ()> + Send + 'static
where
    S: Stream<Item = ()> + Send + Unpin + 'static,
{
    stream::unfold(changes, move |mut changes| async move {
        changes.next().await?;
        let settle = tokio::time::sleep(window);
        tokio::pin!(settle);
        loop {
            tokio::select! {
                () = &mut settle => break,
                next = changes.next() => if next.is_none() { break },
            }
        }
        Some(((), changes))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    #[tokio::test(start_paused = true)]
    async fn a_burst_is_one_trigger_and_a_steady_stream_still_triggers() {
        let (tx, rx) = futures::channel::mpsc::unbounded::<()>();
        let mut triggers = Box::pin(settled(rx, Duration::from_millis(300)));
        let start = Instant::now();
        for _ in 0..5 {
            tx.unbounded_send(()).expect("open");
        }
        triggers.next().await.expect("one trigger");
        assert_eq!(start.elapsed(), Duration::from_millis(300));

        // A change every 100 ms for 1 s: a trigger every window, not none until it stops.
        let feeder = tokio::spawn(async move {
            for _ in 0..10 {
                tx.unbounded_send(()).expect("open");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let mut count = 0;
        while tokio::time::timeout(Duration::from_millis(500), triggers.next())
            .await
            .is_ok_and(|t| t.is_some())
        {
            count += 1;
        }
        feeder.await.expect("feeder");
        assert!(count >= 3, "{count} triggers");
    }
}
