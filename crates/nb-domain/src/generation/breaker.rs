//! A circuit breaker per model, for fallback chains: a model whose requests failed 5 times in
//! a row (each counted after its own retries, and only for failures a fallback is tried on) is
//! skipped for a cooldown (`NB_MODEL_COOLDOWN_SECONDS`). After it, the next request tries it
//! again: a success closes the breaker, a failure opens it again at once. Per instance.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use time::OffsetDateTime;

/// Consecutive failed requests that open a model's breaker.
pub const BREAKER_THRESHOLD: u32 = 5;
/// How long an open breaker skips its model unless configured.
pub const DEFAULT_MODEL_COOLDOWN: Duration = Duration::from_secs(30);

#[derive(Debug, Default, Clone, Copy)]
struct ModelHealth {
    consecutive_failures: u32,
    open_until: Option<OffsetDateTime>,
}

#[derive(Debug)]
pub struct ModelBreaker {
    cooldown: Duration,
    models: Mutex<HashMap<String, ModelHealth>>,
}

impl Default for ModelBreaker {
    fn default() -> Self {
        Self::new(DEFAULT_MODEL_COOLDOWN)
    }
}

impl ModelBreaker {
    pub fn new(cooldown: Duration) -> Self {
        Self {
            cooldown,
            models: Mutex::default(),
        }
    }

    fn models(&self) -> std::sync::MutexGuard<'_, HashMap<String, ModelHealth>> {
        self.models
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether `model` is skipped at `now`.
    pub fn is_open(&self, model: &str, now: OffsetDateTime) -> bool {
        self.models()
            .get(model)
            .and_then(|health| health.open_until)
            .is_some_and(|until| until > now)
    }

    /// A request to `model` failed (after its retries) at `now`.
    pub fn failed(&self, model: &str, now: OffsetDateTime) {
        let mut models = self.models();
        let health = models.entry(model.to_owned()).or_default();
        health.consecutive_failures = health.consecutive_failures.saturating_add(1);
        if health.consecutive_failures >= BREAKER_THRESHOLD {
            let opens = health.open_until.is_none_or(|until| until <= now);
            health.open_until = Some(now + self.cooldown);
            if opens {
                metrics::counter!("model_breaker_opened_total", "model" => model.to_owned())
                    .increment(1);
                tracing::warn!(
                    model,
                    cooldown_s = self.cooldown.as_secs(),
                    "a model failed {BREAKER_THRESHOLD} requests in a row: skipped in fallback chains for the cooldown"
                );
            }
        }
    }

    /// A request to `model` succeeded: its breaker closes.
    pub fn succeeded(&self, model: &str) {
        self.models().remove(model);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_five_failures_in_a_row_and_a_failure_after_the_cooldown_reopens_it() {
        let breaker = ModelBreaker::new(Duration::from_secs(30));
        let now = OffsetDateTime::UNIX_EPOCH;
        for _ in 0..4 {
            breaker.failed("m", now);
        }
        assert!(!breaker.is_open("m", now));
        breaker.succeeded("m");
        for _ in 0..4 {
            breaker.failed("m", now);
        }
        assert!(!breaker.is_open("m", now), "a success resets the count");
        breaker.failed("m", now);
        assert!(breaker.is_open("m", now));
        assert!(!breaker.is_open("other", now));
        let later = now + Duration::from_secs(31);
        assert!(
            !breaker.is_open("m", later),
            "tried again after the cooldown"
        );
        breaker.failed("m", later);
        assert!(breaker.is_open("m", later), "one more failure reopens it");
        breaker.succeeded("m");
        assert!(!breaker.is_open("m", later));
    }
}
