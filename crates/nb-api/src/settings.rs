//! The HTTP server's settings (`[server]` in the configuration file), with their defaults:
//! where it listens, how many workers, how large and how slow a request may be, how long a
//! shutdown waits, which origins' pages may call it and which proxies it trusts.

use std::num::NonZeroUsize;
use std::time::Duration;

use nb_domain::settings::InvalidSetting;
use serde::Deserialize;
use serde_with::{DurationSeconds, serde_as};

/// The address the server listens on when none is configured.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8000";

/// `[server]`.
#[serde_as]
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// `host:port` (`127.0.0.1:8000`, `[::]:8000`, `localhost:8000`).
    pub listen: ListenAddress,
    /// HTTP worker threads (default: one per CPU).
    pub workers: Option<NonZeroUsize>,
    /// Larger JSON bodies are 413 (edits' images have room of their own).
    pub max_body_bytes: usize,
    /// The bytes of larger bodies (images to edit) held at once, server-wide; a request that
    /// would go over is 503 `server_busy` before its body is read.
    pub max_body_bytes_in_flight: usize,
    /// A client must send its request head within this.
    #[serde(rename = "client_request_timeout_seconds")]
    #[serde_as(as = "DurationSeconds<u64>")]
    pub client_request_timeout: Duration,
    /// Idle keep-alive connections are closed after this.
    #[serde(rename = "keep_alive_seconds")]
    #[serde_as(as = "DurationSeconds<u64>")]
    pub keep_alive: Duration,
    /// The longest wait for the next piece of a request's body (like nginx's
    /// `client_body_timeout`).
    #[serde(rename = "client_body_timeout_seconds")]
    #[serde_as(as = "DurationSeconds<u64>")]
    pub client_body_timeout: Duration,
    /// The longest a whole request body may take to arrive, from the request's head (a
    /// client trickling a byte at a time is cut off here).
    #[serde(rename = "client_body_deadline_seconds")]
    #[serde_as(as = "DurationSeconds<u64>")]
    pub client_body_deadline: Duration,
    /// How long requests in flight may finish after SIGTERM.
    #[serde(rename = "shutdown_grace_seconds")]
    #[serde_as(as = "DurationSeconds<u64>")]
    pub shutdown_grace: Duration,
    /// After SIGTERM, how long `/readyz` answers 503 while requests are still served, so a
    /// load balancer stops sending new ones first.
    #[serde(rename = "shutdown_drain_seconds")]
    #[serde_as(as = "DurationSeconds<u64>")]
    pub shutdown_drain: Duration,
    /// Origins whose pages may call the API from a browser (none by default).
    pub cors_origins: Vec<CorsOrigin>,
    /// Whether a proxy in front of the server appends the client's address to
    /// `X-Forwarded-For` (rate limits then count that address, not the proxy's).
    pub trust_forwarded_for: bool,
    /// How many such proxies are in a row, when `trust_forwarded_for`.
    pub trusted_proxy_hops: NonZeroUsize,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: ListenAddress(DEFAULT_LISTEN.to_owned()),
            workers: None,
            max_body_bytes: 64 * 1024,
            max_body_bytes_in_flight: crate::body_budget::DEFAULT_MAX_BODY_BYTES_IN_FLIGHT,
            client_request_timeout: Duration::from_secs(10),
            keep_alive: Duration::from_secs(75),
            client_body_timeout: Duration::from_secs(10),
            client_body_deadline: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(30),
            shutdown_drain: Duration::ZERO,
            cors_origins: Vec::new(),
            trust_forwarded_for: false,
            trusted_proxy_hops: NonZeroUsize::MIN,
        }
    }
}

impl ServerSettings {
    /// What serde cannot say about single values.
    pub fn check(&self) -> Result<(), InvalidSetting> {
        if self.max_body_bytes < 1024 {
            return Err(InvalidSetting::new(
                "max_body_bytes",
                "must be at least 1024",
            ));
        }
        for (key, timeout) in [
            (
                "client_request_timeout_seconds",
                self.client_request_timeout,
            ),
            ("keep_alive_seconds", self.keep_alive),
            ("client_body_timeout_seconds", self.client_body_timeout),
            ("client_body_deadline_seconds", self.client_body_deadline),
            ("shutdown_grace_seconds", self.shutdown_grace),
        ] {
            if timeout.is_zero() {
                return Err(InvalidSetting::new(key, "must be at least 1"));
            }
        }
        Ok(())
    }

    /// How many proxies append to `X-Forwarded-For` (0: trust none, take the TCP peer).
    pub fn trusted_proxy_hops(&self) -> usize {
        if self.trust_forwarded_for {
            self.trusted_proxy_hops.get()
        } else {
            0
        }
    }
}

/// `host:port`, checked when read, so that a typo stops the server with a clear message
/// instead of failing at bind time.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct ListenAddress(String);

impl ListenAddress {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ListenAddress {
    type Error = String;

    fn try_from(raw: String) -> Result<Self, String> {
        let raw = raw.trim();
        if raw.parse::<std::net::SocketAddr>().is_ok() {
            return Ok(Self(raw.to_owned()));
        }
        let valid_host_and_port = raw.rsplit_once(':').is_some_and(|(host, port)| {
            let host_ok = !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'));
            host_ok && port.parse::<u16>().is_ok()
        });
        if valid_host_and_port {
            Ok(Self(raw.to_owned()))
        } else {
            Err("must be host:port, such as 127.0.0.1:8000 or [::]:8000".to_owned())
        }
    }
}

/// An origin (`https://app.example.com`, `http://localhost:5173`): a scheme, a host and an
/// optional port, nothing more; `*` is refused, every origin must be named.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct CorsOrigin(String);

impl CorsOrigin {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for CorsOrigin {
    type Error = String;

    fn try_from(origin: String) -> Result<Self, String> {
        let origin = origin.trim();
        let parsed = url::Url::parse(origin).ok();
        let is_origin = parsed.as_ref().is_some_and(|url| {
            matches!(url.scheme(), "http" | "https")
                && url.host().is_some()
                && url.path() == "/"
                && url.query().is_none()
                && !origin.ends_with('/')
        });
        if is_origin {
            Ok(Self(origin.to_owned()))
        } else {
            Err(format!(
                "{origin:?} is not an origin such as https://app.example.com"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_are_host_and_port() {
        for good in ["0.0.0.0:8000", "[::]:8000", "localhost:9000"] {
            assert_eq!(
                ListenAddress::try_from(good.to_owned()).unwrap().as_str(),
                good
            );
        }
        for bad in ["8000", "0.0.0.0", "0.0.0.0:http", "host:99999", ":8000"] {
            assert!(ListenAddress::try_from(bad.to_owned()).is_err(), "{bad}");
        }
    }

    #[test]
    fn cors_origins_must_be_named_origins() {
        for good in ["https://app.example.com", "http://localhost:5173"] {
            assert_eq!(
                CorsOrigin::try_from(good.to_owned()).unwrap().as_str(),
                good
            );
        }
        for bad in [
            "*",
            "app.example.com",
            "https://app.example.com/path",
            "https://a.io/",
        ] {
            assert!(CorsOrigin::try_from(bad.to_owned()).is_err(), "{bad}");
        }
    }

    #[test]
    fn zero_timeouts_and_tiny_bodies_are_refused_by_name() {
        let settings = ServerSettings {
            keep_alive: Duration::ZERO,
            ..ServerSettings::default()
        };
        assert_eq!(settings.check().unwrap_err().key, "keep_alive_seconds");
        let settings = ServerSettings {
            max_body_bytes: 10,
            ..ServerSettings::default()
        };
        assert_eq!(settings.check().unwrap_err().key, "max_body_bytes");
        assert!(ServerSettings::default().check().is_ok());
    }

    #[test]
    fn forwarded_for_counts_only_when_trusted() {
        let settings = ServerSettings {
            trusted_proxy_hops: NonZeroUsize::new(2).unwrap(),
            ..ServerSettings::default()
        };
        assert_eq!(settings.trusted_proxy_hops(), 0);
        let trusted = ServerSettings {
            trust_forwarded_for: true,
            ..settings
        };
        assert_eq!(trusted.trusted_proxy_hops(), 2);
    }
}
