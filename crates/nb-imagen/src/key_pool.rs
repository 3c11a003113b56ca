//! Several Gemini API keys (`GOOGLE_API_KEYS`), used round-robin: a key Google rate limits
//! (429) rests for Google's `retryDelay` (or 30 s) while the others serve; a key Google
//! rejects (`API_KEY_INVALID`, 401/403) is taken out until the process restarts, and the
//! operator is told once in the log, by its index (never the key). The pool is per instance:
//! another instance learns of a rate limit or a rejected key by meeting it itself.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::header::HeaderValue;
use tokio::time::Instant;

/// How long a rate-limited key rests when Google does not say.
pub const DEFAULT_REST: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyState {
    Usable,
    RestingUntil(Instant),
    Rejected,
}

struct PooledKey {
    /// `x-goog-api-key`'s value, marked sensitive (never in a debug print of the request).
    header: HeaderValue,
    state: Mutex<KeyState>,
}

/// The keys, in the order configured (their index is how logs and metrics name them).
pub struct KeyPool {
    keys: Vec<PooledKey>,
    next: AtomicUsize,
}

impl std::fmt::Debug for KeyPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPool")
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

/// A key handed out for one attempt.
#[derive(Debug, Clone)]
pub struct PickedKey {
    pub index: usize,
    pub header: HeaderValue,
}

/// Why no key can be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoKey {
    /// Google rejected every key.
    AllRejected,
}

impl KeyPool {
    /// The pool of `headers` (each already marked sensitive). Empty pools are the caller's
    /// error.
    pub fn new(headers: Vec<HeaderValue>) -> Self {
        Self {
            keys: headers
                .into_iter()
                .map(|header| PooledKey {
                    header,
                    state: Mutex::new(KeyState::Usable),
                })
                .collect(),
            next: AtomicUsize::new(0),
        }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    fn state(&self, index: usize) -> KeyState {
        *self.keys[index]
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn set_state(&self, index: usize, state: KeyState) {
        *self.keys[index]
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = state;
    }

    /// How many keys serve now (not resting, not rejected).
    pub fn usable(&self) -> usize {
        let now = Instant::now();
        (0..self.keys.len())
            .filter(|&index| is_usable(self.state(index), now))
            .count()
    }

    /// The next usable key, round-robin; when every key left is resting, the one that rests
    /// least (the caller waits its usual backoff first).
    pub fn pick(&self) -> Result<PickedKey, NoKey> {
        let now = Instant::now();
        let count = self.keys.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut least_resting: Option<(usize, Instant)> = None;
        for offset in 0..count {
            let index = (start + offset) % count;
            match self.state(index) {
                state if is_usable(state, now) => return Ok(self.picked(index)),
                KeyState::RestingUntil(until)
                    if least_resting.is_none_or(|(_, earliest)| until < earliest) =>
                {
                    least_resting = Some((index, until));
                }
                _ => {}
            }
        }
        least_resting
            .map(|(index, _)| self.picked(index))
            .ok_or(NoKey::AllRejected)
    }

    fn picked(&self, index: usize) -> PickedKey {
        PickedKey {
            index,
            header: self.keys[index].header.clone(),
        }
    }

    /// Whether another key than `index` serves now.
    pub fn another_usable(&self, index: usize) -> bool {
        let now = Instant::now();
        (0..self.keys.len()).any(|other| other != index && is_usable(self.state(other), now))
    }

    /// Google rate limited key `index`: it rests for `retry_delay` (or 30 s).
    pub fn rest(&self, index: usize, retry_delay: Option<Duration>) {
        if self.state(index) == KeyState::Rejected {
            return;
        }
        let rest = retry_delay.unwrap_or(DEFAULT_REST);
        self.set_state(index, KeyState::RestingUntil(Instant::now() + rest));
        tracing::warn!(
            key_index = index,
            rest_s = rest.as_secs(),
            "a Google API key is rate limited: it rests while the others serve"
        );
    }

    /// Google rejected key `index`: it is out until the process restarts (told once).
    pub fn reject(&self, index: usize) {
        if self.state(index) == KeyState::Rejected {
            return;
        }
        self.set_state(index, KeyState::Rejected);
        tracing::error!(
            key_index = index,
            keys_left = self.usable(),
            "Google rejected a Google API key (API_KEY_INVALID or permission denied): it is taken out of the pool until restart; check GOOGLE_API_KEYS"
        );
    }
}

impl nb_domain::readiness::UpstreamKeys for KeyPool {
    fn availability(&self) -> nb_domain::readiness::KeyAvailability {
        nb_domain::readiness::KeyAvailability {
            usable: self.usable(),
            total: self.len(),
        }
    }
}

fn is_usable(state: KeyState, now: Instant) -> bool {
    match state {
        KeyState::Usable => true,
        KeyState::RestingUntil(until) => until <= now,
        KeyState::Rejected => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(n: usize) -> KeyPool {
        KeyPool::new(
            (0..n)
                .map(|i| HeaderValue::from_str(&format!("key-{i}")).unwrap())
                .collect(),
        )
    }

    #[tokio::test]
    async fn round_robin_skips_resting_and_rejected_keys() {
        let keys = pool(3);
        let picked: Vec<usize> = (0..6).map(|_| keys.pick().unwrap().index).collect();
        assert_eq!(picked, [0, 1, 2, 0, 1, 2]);
        keys.rest(1, Some(Duration::from_millis(100)));
        keys.reject(2);
        assert_eq!(keys.usable(), 1);
        assert!((0..4).all(|_| keys.pick().unwrap().index == 0));
        assert!(!keys.another_usable(0));
        // Rested: it serves again.
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(keys.usable(), 2);
        let picked: Vec<usize> = (0..4).map(|_| keys.pick().unwrap().index).collect();
        assert!(picked.contains(&1) && !picked.contains(&2), "{picked:?}");
    }

    #[tokio::test]
    async fn when_all_rest_the_one_resting_least_is_picked_and_all_rejected_is_no_key() {
        let keys = pool(2);
        keys.rest(0, Some(Duration::from_secs(20)));
        keys.rest(1, None);
        assert_eq!(keys.pick().unwrap().index, 0);
        keys.reject(0);
        keys.reject(1);
        assert_eq!(keys.pick().unwrap_err(), NoKey::AllRejected);
        // A rejected key never rests back into service.
        keys.rest(0, Some(Duration::ZERO));
        assert_eq!(keys.usable(), 0);
    }
}
