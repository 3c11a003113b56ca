//! The in-memory limiter passes the rate-limiter contract (one instance: both handles are
//! the same limiter).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use nb_system::MemoryRateLimiter;
use nb_testkit::rate_limiter::LimiterUnderTest;

async fn memory_limiter() -> LimiterUnderTest {
    let limiter = Arc::new(MemoryRateLimiter::default());
    LimiterUnderTest {
        first: limiter.clone(),
        second: limiter,
        keep_alive: Box::new(()),
    }
}

nb_testkit::rate_limiter_contract!(memory_limiter().await);
