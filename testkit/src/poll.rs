//! The one way a test waits for something that happens eventually (a row marked, a leader
//! elected, an ACL in force): poll a check every [`POLL_EVERY`] until it is met, and name what
//! was awaited when it is not. No fixed sleeps: on a loaded 2-core machine a condition takes
//! as long as it takes, up to the test's generous deadline.

use std::{future::Future, time::Duration};

/// How often a condition is checked: quick enough not to slow a test down, slow enough not to
/// load the services the check asks.
pub const POLL_EVERY: Duration = Duration::from_millis(100);

/// What a check returns: `bool` (met or not) or `Option<T>` (the value, once there).
pub trait Check {
    /// What [`eventually`] hands back once the check is met.
    type Value;
    /// The value if the check is met.
    fn met(self) -> Option<Self::Value>;
}

impl Check for bool {
    type Value = ();
    fn met(self) -> Option<()> {
        self.then_some(())
    }
}

impl<T> Check for Option<T> {
    type Value = T;
    fn met(self) -> Option<T> {
        self
    }
}

/// Polls `check` until it is met and returns its value; an error naming `what` once `within`
/// has passed. For a test that wants to handle the failure (or `?` it); [`wait_for`] panics.
pub async fn eventually<F, Fut>(
    what: &str,
    within: Duration,
    mut check: F,
) -> anyhow::Result<<Fut::Output as Check>::Value>
where
    F: FnMut() -> Fut,
    Fut: Future,
    Fut::Output: Check,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = check().await.met() {
            return Ok(value);
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("timed out after {within:?} waiting for {what}");
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// Polls `check` until it is met and returns its value; panics naming `what` once `within` has
/// passed.
pub async fn wait_for<F, Fut>(
    what: &str,
    within: Duration,
    check: F,
) -> <Fut::Output as Check>::Value
where
    F: FnMut() -> Fut,
    Fut: Future,
    Fut::Output: Check,
{
    match eventually(what, within, check).await {
        Ok(value) => value,
        Err(e) => panic!("{e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn returns_the_value_once_the_check_is_met() {
        let mut calls = 0;
        let value = eventually("the third call", Duration::from_secs(10), || {
            calls += 1;
            let n = calls;
            async move { (n >= 3).then_some(n) }
        })
        .await
        .expect("met");
        assert_eq!(value, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn names_what_it_waited_for_when_the_deadline_passes() {
        let err = eventually("pigs to fly", Duration::from_secs(1), || async { false })
            .await
            .expect_err("never met");
        assert!(err.to_string().contains("pigs to fly"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "waiting for the impossible")]
    async fn wait_for_panics_with_the_reason() {
        wait_for("the impossible", Duration::from_secs(1), || async { false }).await;
    }
}
