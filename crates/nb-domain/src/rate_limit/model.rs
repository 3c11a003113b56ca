//! Rate limits: how many actions of a kind a subject may take a minute.
//!
//! Subjects are bounded whatever clients send: addresses are cut to their network (an IPv6
//! client is one /64, what one customer gets), emails and pairs are SHA-256 digests, keys and
//! accounts are ids. A limiter stores at most a bounded number of them.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::accounts::model::{EmailAddress, UserId};
use crate::api_keys::model::ApiKeyId;

/// What is being counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitedAction {
    /// Registrations and logins from one client network.
    AuthByAddress,
    /// Registrations and logins for one email from one client network.
    AuthByEmailAndAddress,
    /// Registrations and logins for one email from anywhere: a looser ceiling.
    AuthByEmail,
    /// Generation requests with one API key.
    GenerationsByKey,
    /// Generation requests with any key of one account.
    GenerationsByAccount,
}

impl LimitedAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AuthByAddress => "auth_by_address",
            Self::AuthByEmailAndAddress => "auth_by_email_and_address",
            Self::AuthByEmail => "auth_by_email",
            Self::GenerationsByKey => "generations_by_key",
            Self::GenerationsByAccount => "generations_by_account",
        }
    }
}

/// A client's address as limits see it: an IPv4 address, or the /64 network of an IPv6 one
/// (IPv4-mapped IPv6 addresses are their IPv4 address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientAddress(IpAddr);

impl ClientAddress {
    pub fn new(ip: IpAddr) -> Self {
        let network = match ip {
            IpAddr::V4(v4) => IpAddr::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                    IpAddr::V6(prefix.into())
                }
            },
        };
        Self(network)
    }

    pub fn network(self) -> IpAddr {
        self.0
    }
}

/// Who a limit counts: a short value of bounded length, never raw client input.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LimitSubject(String);

impl LimitSubject {
    pub fn address(address: ClientAddress) -> Self {
        Self(address.0.to_string())
    }

    pub fn email(email: &EmailAddress) -> Self {
        Self(hex::encode(Sha256::digest(email.as_str().as_bytes())))
    }

    pub fn email_and_address(email: &EmailAddress, address: ClientAddress) -> Self {
        let mut digest = Sha256::new();
        digest.update(email.as_str().as_bytes());
        digest.update([0]);
        digest.update(address.0.to_string().as_bytes());
        Self(hex::encode(digest.finalize()))
    }

    pub fn key(key_id: ApiKeyId) -> Self {
        Self(key_id.to_string())
    }

    pub fn account(user_id: UserId) -> Self {
        Self(user_id.to_string())
    }

    /// Where a full limiter counts subjects it has no room for: together, so that a flood
    /// of new subjects is limited as one.
    pub fn overflow() -> Self {
        Self("overflow".to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One counter: an action by a subject.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RateLimitKey {
    pub action: LimitedAction,
    pub subject: LimitSubject,
}

/// An allowance: up to `n` a minute, refilled evenly (a minute's allowance may be used at
/// once).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PerMinute(pub NonZeroU32);

impl PerMinute {
    /// `None` for zero.
    pub fn new(n: u32) -> Option<Self> {
        NonZeroU32::new(n).map(Self)
    }

    pub fn get(self) -> u32 {
        self.0.get()
    }
}

/// A limiter's answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateDecision {
    pub allowed: bool,
    pub limit: u32,
    /// Requests left right now, after this one.
    pub remaining: u32,
    /// Until the whole allowance is back.
    pub reset_after: Duration,
    /// When refused: until one more request is allowed.
    pub retry_after: Duration,
}

/// What [`RateLimiter::take`](super::RateLimiter::take) took: how many requests' worth, and
/// the decision for the last of them (or the refusal, when none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    pub granted: u32,
    pub last: RateDecision,
}

impl Taken {
    /// Nothing taken, nothing decided (what giving back alone answers).
    pub fn nothing(rate: PerMinute) -> Self {
        Self {
            granted: 0,
            last: RateDecision {
                allowed: false,
                limit: rate.get(),
                remaining: 0,
                reset_after: Duration::ZERO,
                retry_after: Duration::ZERO,
            },
        }
    }
}

/// The deployment's allowances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub auth_per_address: PerMinute,
    pub auth_per_email_and_address: PerMinute,
    pub auth_per_email: PerMinute,
    pub generations_per_key: PerMinute,
    pub generations_per_account: PerMinute,
}
