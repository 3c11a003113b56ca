//! `Prefer` (RFC 7240): `respond-async`, and `wait=N` with it.
//!
//! Preferences are read from every `Prefer` header, comma-separated, each `token[=value]`
//! with `;` parameters (ignored); names are case-insensitive and values may be quoted. A
//! preference this server does not know, or a `wait` that is not a number of seconds, is
//! ignored, as the RFC asks.

use std::time::Duration;

use actix_web::HttpRequest;
use actix_web::http::header::HeaderName;
use nb_domain::generation::MAX_WAIT;

pub const PREFER: HeaderName = HeaderName::from_static("prefer");
pub const PREFERENCE_APPLIED: HeaderName = HeaderName::from_static("preference-applied");

/// What the client prefers about the answer's timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Preferences {
    /// `respond-async`: answer 202 once the job is committed.
    pub respond_async: bool,
    /// `wait=N`: how long to wait for the job before answering 202 (at most a minute).
    pub wait: Duration,
}

impl Preferences {
    pub fn of(request: &HttpRequest) -> Self {
        let mut preferences = Self::default();
        let values = request
            .headers()
            .get_all(PREFER)
            .filter_map(|value| value.to_str().ok());
        for preference in values.flat_map(|value| value.split(',')) {
            let token = preference.split(';').next().unwrap_or_default();
            let (name, value) = match token.split_once('=') {
                Some((name, value)) => (name.trim(), Some(value.trim().trim_matches('"'))),
                None => (token.trim(), None),
            };
            if name.eq_ignore_ascii_case("respond-async") {
                preferences.respond_async = true;
            } else if name.eq_ignore_ascii_case("wait")
                && let Some(seconds) = value.and_then(|value| value.parse::<u64>().ok())
            {
                preferences.wait = Duration::from_secs(seconds).min(MAX_WAIT);
            }
        }
        preferences
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn of(values: &[&str]) -> Preferences {
        let mut request = TestRequest::default();
        for value in values {
            request = request.append_header((PREFER, *value));
        }
        Preferences::of(&request.to_http_request())
    }

    #[test]
    fn reads_respond_async_and_wait_from_any_prefer_header() {
        assert_eq!(of(&[]), Preferences::default());
        assert_eq!(
            of(&["respond-async, wait=10"]),
            Preferences {
                respond_async: true,
                wait: Duration::from_secs(10)
            }
        );
        assert_eq!(
            of(&["Wait=\"5\"", "RESPOND-ASYNC; foo=bar"]),
            Preferences {
                respond_async: true,
                wait: Duration::from_secs(5)
            }
        );
        assert_eq!(of(&["return=minimal"]), Preferences::default());
    }

    #[test]
    fn a_long_wait_is_cut_to_a_minute_and_a_bad_one_ignored() {
        assert_eq!(of(&["respond-async, wait=600"]).wait, MAX_WAIT);
        assert_eq!(of(&["respond-async, wait=soon"]).wait, Duration::ZERO);
        assert_eq!(of(&["respond-async, wait=-1"]).wait, Duration::ZERO);
    }
}
