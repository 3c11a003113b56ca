//! Test support, written once and used by every crate's tests (a dev-dependency only; the
//! server never links it):
//!
//! - [`eventually`]: wait until a state holds, polling, within a bound; never a fixed sleep
//!   standing in for "until".
//! - [`google_facts`]: what Google counts, for the fakes of Google (tests and benchmark).
//! - [`small_disk`]: a tiny tmpfs, for tests of a full disk.
//! - [`rate_limiter`]: the contract of the domain's `RateLimiter` port, run against every
//!   limiter (in memory, PostgreSQL, Redis) by [`rate_limiter_contract!`].

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // Test support fails loudly.

pub mod google_facts;
pub mod rate_limiter;
pub mod small_disk;

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `check` every `poll` until it returns `Some`, and returns that; panics naming `what`
/// when `timeout` passes first. The first check is immediate.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, poll: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            started.elapsed() < timeout,
            "{what}: not within {timeout:?}"
        );
        tokio::time::sleep(poll).await;
    }
}

/// [`eventually`] for a condition: returns once `check` is true.
pub async fn eventually_true<F, Fut>(what: &str, timeout: Duration, poll: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    eventually(what, timeout, poll, || {
        let holds = check();
        async move { holds.await.then_some(()) }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test]
    async fn returns_the_first_value_that_comes() {
        let tries = AtomicU32::new(0);
        let value = eventually(
            "the third try",
            Duration::from_secs(5),
            Duration::ZERO,
            || {
                let n = tries.fetch_add(1, Ordering::SeqCst) + 1;
                async move { (n == 3).then_some(n) }
            },
        )
        .await;
        assert_eq!(value, 3);
    }

    #[tokio::test]
    #[should_panic(expected = "never: not within")]
    async fn fails_naming_what_never_happened() {
        eventually_true(
            "never",
            Duration::from_millis(30),
            Duration::from_millis(5),
            || async { false },
        )
        .await;
    }
}
