//! The [`Throttle`]: the deployment's limits applied through a [`RateLimiter`] port.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use super::model::{
    ClientAddress, LimitSubject, LimitedAction, Limits, PerMinute, RateDecision, RateLimitKey,
};
use super::ports::{RateLimitError, RateLimiter};
use crate::accounts::model::EmailAddress;
use crate::api_keys::model::AuthenticatedApiKey;

/// Why a request was refused.
#[derive(Debug, thiserror::Error)]
pub enum ThrottleError {
    #[error("over the {} limit", action.as_str())]
    Limited {
        action: LimitedAction,
        decision: RateDecision,
    },
    #[error(transparent)]
    Limiter(#[from] RateLimitError),
}

/// Applies the deployment's limits.
#[derive(Clone)]
pub struct Throttle {
    limiter: Arc<dyn RateLimiter>,
    limits: Limits,
}

impl fmt::Debug for Throttle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Throttle")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// The deployment's per-minute limits, as the HTTP adapter applies them.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait Throttling: Send + Sync + 'static {
    /// One registration or login attempt. Counted per client network, per email from that
    /// network, and per email from anywhere (a looser ceiling), in that order, stopping at
    /// the first refusal: an attempt refused for its network spends nothing of the email's
    /// allowance, so an attacker elsewhere cannot lock the owner out. An email that is not
    /// a valid address (`None`) is counted per network only.
    async fn auth_attempt<'a>(
        &self,
        address: Option<ClientAddress>,
        email: Option<&'a EmailAddress>,
    ) -> Result<(), ThrottleError>;

    /// One generation request: counted per key, then per account (so that more keys do not
    /// mean more generations). Returns the key's standing, for the `x-ratelimit-*` headers.
    async fn generation(&self, caller: &AuthenticatedApiKey)
    -> Result<RateDecision, ThrottleError>;
}

impl Throttle {
    pub fn new(limiter: Arc<dyn RateLimiter>, limits: Limits) -> Self {
        Self { limiter, limits }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    async fn count(
        &self,
        action: LimitedAction,
        subject: LimitSubject,
        rate: PerMinute,
    ) -> Result<RateDecision, ThrottleError> {
        let key = RateLimitKey { action, subject };
        let decision = self.limiter.check(&key, rate).await?;
        if decision.allowed {
            Ok(decision)
        } else {
            Err(ThrottleError::Limited { action, decision })
        }
    }
}

#[async_trait]
impl Throttling for Throttle {
    async fn auth_attempt<'a>(
        &self,
        address: Option<ClientAddress>,
        email: Option<&'a EmailAddress>,
    ) -> Result<(), ThrottleError> {
        let limits = self.limits;
        if let Some(address) = address {
            let subject = LimitSubject::address(address);
            self.count(
                LimitedAction::AuthByAddress,
                subject,
                limits.auth_per_address,
            )
            .await?;
        }
        if let Some(email) = email {
            if let Some(address) = address {
                let subject = LimitSubject::email_and_address(email, address);
                let rate = limits.auth_per_email_and_address;
                self.count(LimitedAction::AuthByEmailAndAddress, subject, rate)
                    .await?;
            }
            let subject = LimitSubject::email(email);
            self.count(LimitedAction::AuthByEmail, subject, limits.auth_per_email)
                .await?;
        }
        Ok(())
    }

    async fn generation(
        &self,
        caller: &AuthenticatedApiKey,
    ) -> Result<RateDecision, ThrottleError> {
        let limits = self.limits;
        // A key's own allowance can only tighten the deployment's.
        let per_key = caller.per_minute.map_or(limits.generations_per_key, |own| {
            PerMinute(own.min(limits.generations_per_key.0))
        });
        let by_key = self
            .count(
                LimitedAction::GenerationsByKey,
                LimitSubject::key(caller.key_id),
                per_key,
            )
            .await?;
        self.count(
            LimitedAction::GenerationsByAccount,
            LimitSubject::account(caller.user_id),
            limits.generations_per_account,
        )
        .await
        .map_err(|refused| match refused {
            // The headers speak of the key: its allowance is what was just spent.
            ThrottleError::Limited { action, decision } => ThrottleError::Limited {
                action,
                decision: RateDecision {
                    remaining: by_key.remaining,
                    limit: by_key.limit,
                    reset_after: by_key.reset_after,
                    ..decision
                },
            },
            other => other,
        })?;
        Ok(by_key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::model::UserId;
    use crate::api_keys::model::ApiKeyId;
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::time::Duration;
    use uuid::Uuid;

    /// Counts every check; refuses a key once it has been allowed `allowance` times.
    #[derive(Default)]
    struct CountingLimiter {
        allowed: Mutex<HashMap<RateLimitKey, u32>>,
        checks: Mutex<Vec<LimitedAction>>,
    }

    #[async_trait]
    impl RateLimiter for CountingLimiter {
        async fn check(
            &self,
            key: &RateLimitKey,
            rate: PerMinute,
        ) -> Result<RateDecision, RateLimitError> {
            self.checks.lock().unwrap().push(key.action);
            let mut allowed = self.allowed.lock().unwrap();
            let count = allowed.entry(key.clone()).or_default();
            let ok = *count < rate.get();
            if ok {
                *count += 1;
            }
            Ok(RateDecision {
                allowed: ok,
                limit: rate.get(),
                remaining: rate.get() - *count,
                reset_after: Duration::from_secs(60),
                retry_after: Duration::from_secs(if ok { 0 } else { 6 }),
            })
        }

        async fn forget_idle(&self) -> Result<u64, RateLimitError> {
            Ok(0)
        }
    }

    fn per_minute(n: u32) -> PerMinute {
        PerMinute::new(n).unwrap()
    }

    fn throttle(limiter: Arc<CountingLimiter>) -> Throttle {
        Throttle::new(
            limiter,
            Limits {
                auth_per_address: per_minute(30),
                auth_per_email_and_address: per_minute(3),
                auth_per_email: per_minute(5),
                generations_per_key: per_minute(2),
                generations_per_account: per_minute(3),
            },
        )
    }

    fn address(ip: &str) -> Option<ClientAddress> {
        Some(ClientAddress::new(ip.parse().unwrap()))
    }

    #[test]
    fn ipv6_clients_are_limited_per_64_and_mapped_ipv4_as_ipv4() {
        let one = ClientAddress::new("2001:db8:1:2:aaaa::1".parse().unwrap());
        let same_network = ClientAddress::new("2001:db8:1:2:ffff::9".parse().unwrap());
        let other_network = ClientAddress::new("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(one, same_network);
        assert_ne!(one, other_network);
        assert_eq!(one.network().to_string(), "2001:db8:1:2::");
        let mapped = ClientAddress::new("::ffff:192.0.2.7".parse().unwrap());
        assert_eq!(mapped.network().to_string(), "192.0.2.7");
    }

    #[test]
    fn subjects_are_bounded_whatever_the_input() {
        let long = EmailAddress::parse(&format!("{}@example.com", "a".repeat(60))).unwrap();
        assert_eq!(LimitSubject::email(&long).as_str().len(), 64);
        let address = ClientAddress::new("192.0.2.1".parse().unwrap());
        assert_eq!(
            LimitSubject::email_and_address(&long, address)
                .as_str()
                .len(),
            64
        );
    }

    #[tokio::test]
    async fn an_attacker_on_another_network_cannot_lock_the_owner_out() {
        let limiter = Arc::new(CountingLimiter::default());
        let throttle = throttle(limiter.clone());
        let ada = EmailAddress::parse("ada@example.com").unwrap();
        for _ in 0..3 {
            throttle
                .auth_attempt(address("198.51.100.66"), Some(&ada))
                .await
                .unwrap();
        }
        // The attacker's own pair is spent; their refused attempts spend nothing more.
        for _ in 0..10 {
            let refused = throttle
                .auth_attempt(address("198.51.100.66"), Some(&ada))
                .await;
            assert!(matches!(
                refused,
                Err(ThrottleError::Limited {
                    action: LimitedAction::AuthByEmailAndAddress,
                    ..
                })
            ));
        }
        // The owner, from home, still gets in (the email's ceiling of 5 has 2 left).
        throttle
            .auth_attempt(address("203.0.113.5"), Some(&ada))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_network_over_its_limit_spends_nothing_else() {
        let limiter = Arc::new(CountingLimiter::default());
        let throttle = Throttle::new(
            limiter.clone(),
            Limits {
                auth_per_address: per_minute(1),
                ..*throttle(limiter.clone()).limits()
            },
        );
        let ada = EmailAddress::parse("ada@example.com").unwrap();
        throttle
            .auth_attempt(address("192.0.2.1"), Some(&ada))
            .await
            .unwrap();
        limiter.checks.lock().unwrap().clear();
        assert!(
            throttle
                .auth_attempt(address("192.0.2.1"), Some(&ada))
                .await
                .is_err()
        );
        assert_eq!(
            *limiter.checks.lock().unwrap(),
            [LimitedAction::AuthByAddress],
            "a refused attempt was counted against the email"
        );
    }

    #[tokio::test]
    async fn malformed_emails_count_per_network_only() {
        let limiter = Arc::new(CountingLimiter::default());
        throttle(limiter.clone())
            .auth_attempt(address("192.0.2.1"), None)
            .await
            .unwrap();
        assert_eq!(
            *limiter.checks.lock().unwrap(),
            [LimitedAction::AuthByAddress]
        );
    }

    #[tokio::test]
    async fn a_keys_own_allowance_tightens_the_deployments() {
        let throttle = throttle(Arc::new(CountingLimiter::default()));
        let user_id = UserId(Uuid::from_u128(1));
        let mut key = AuthenticatedApiKey::unlimited(ApiKeyId(Uuid::from_u128(9)), user_id);
        key.per_minute = std::num::NonZeroU32::new(1);
        assert_eq!(throttle.generation(&key).await.unwrap().limit, 1);
        assert!(throttle.generation(&key).await.is_err());
        let mut generous = AuthenticatedApiKey::unlimited(ApiKeyId(Uuid::from_u128(10)), user_id);
        generous.per_minute = std::num::NonZeroU32::new(1_000);
        assert_eq!(throttle.generation(&generous).await.unwrap().limit, 2);
    }

    #[tokio::test]
    async fn more_keys_do_not_mean_more_generations() {
        let throttle = throttle(Arc::new(CountingLimiter::default()));
        let user_id = UserId(Uuid::from_u128(1));
        let key = |n| AuthenticatedApiKey::unlimited(ApiKeyId(Uuid::from_u128(n)), user_id);
        let mut allowed = 0;
        for n in 10..15 {
            for _ in 0..2 {
                allowed += usize::from(throttle.generation(&key(n)).await.is_ok());
            }
        }
        assert_eq!(
            allowed, 3,
            "the account's allowance was multiplied by its keys"
        );
        let first = throttle.generation(&key(10)).await;
        assert!(matches!(
            first,
            Err(ThrottleError::Limited {
                action: LimitedAction::GenerationsByKey,
                ..
            })
        ));
    }
}
