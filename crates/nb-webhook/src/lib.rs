//! The webhook sender: one `POST` per attempt, to an address checked after DNS.
//!
//! A name is resolved here, every address it resolves to is checked against the target
//! policy (any address inside refuses the attempt as `blocked_address`, with no connection
//! made), and the request is pinned to the checked addresses (`resolve_to_addrs`), so a name
//! rebound between the check and the connection cannot reach inside. Redirects are not
//! followed, no proxy is used, the whole exchange has a deadline, and at most 64 KB of the
//! answer is read.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use nb_domain::ports::WebhookSender;
use nb_domain::webhooks::{AttemptResult, TargetPolicy};

/// How long a receiver has to answer (Standard Webhooks' recommendation is 15 s; ours, 10).
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// The most of an answer that is read.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone)]
pub struct HttpWebhookSender {
    policy: TargetPolicy,
    timeout: Duration,
}

impl HttpWebhookSender {
    pub fn new(policy: TargetPolicy) -> Self {
        Self {
            policy,
            timeout: DELIVERY_TIMEOUT,
        }
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Where `url` may be reached: its addresses, each allowed by the policy.
    async fn addresses(&self, url: &url::Url) -> Result<(String, Vec<SocketAddr>), &'static str> {
        let port = url.port_or_known_default().ok_or("invalid_url")?;
        let (name, addresses): (String, Vec<SocketAddr>) = match url.host() {
            Some(url::Host::Ipv4(ip)) => (ip.to_string(), vec![SocketAddr::new(ip.into(), port)]),
            Some(url::Host::Ipv6(ip)) => (ip.to_string(), vec![SocketAddr::new(ip.into(), port)]),
            Some(url::Host::Domain(name)) => {
                let resolved =
                    tokio::time::timeout(self.timeout, tokio::net::lookup_host((name, port)))
                        .await
                        .map_err(|_| "dns_failed")?
                        .map_err(|_| "dns_failed")?;
                (name.to_owned(), resolved.collect())
            }
            None => return Err("invalid_url"),
        };
        if addresses.is_empty() {
            return Err("dns_failed");
        }
        if addresses
            .iter()
            .any(|address| !self.policy.permits(address.ip()))
        {
            return Err("blocked_address");
        }
        Ok((name, addresses))
    }

    async fn exchange(
        &self,
        url: &str,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    ) -> Result<u16, (Option<u16>, &'static str)> {
        let parsed = url::Url::parse(url).map_err(|_| (None, "invalid_url"))?;
        let (name, addresses) = self
            .addresses(&parsed)
            .await
            .map_err(|error| (None, error))?;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(self.timeout)
            .resolve_to_addrs(&name, &addresses)
            .build()
            .map_err(|_| (None, "connection_failed"))?;
        let mut request = client.post(parsed).body(body);
        for (header, value) in headers {
            request = request.header(header, value);
        }
        let failed = |error: reqwest::Error| {
            if error.is_timeout() {
                (None, "timeout")
            } else if error.is_connect() {
                (None, "connection_failed")
            } else {
                (None, "request_failed")
            }
        };
        let mut response = request.send().await.map_err(failed)?;
        let status = response.status().as_u16();
        // The answer is read (up to a bound) so that the connection ends cleanly; its bytes
        // are not kept.
        let mut read = 0;
        while read < MAX_ANSWER_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => read += chunk.len(),
                Ok(None) => break,
                Err(error) => return Err((Some(status), failed(error).1)),
            }
        }
        if response.status().is_redirection() {
            return Err((Some(status), "redirect"));
        }
        Ok(status)
    }
}

#[async_trait]
impl WebhookSender for HttpWebhookSender {
    async fn send(
        &self,
        url: &str,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    ) -> AttemptResult {
        let started = Instant::now();
        let outcome = self.exchange(url, headers, body).await;
        let duration = started.elapsed();
        match outcome {
            Ok(status) => AttemptResult {
                status_code: Some(status),
                error: None,
                duration,
            },
            Err((status_code, error)) => AttemptResult {
                status_code,
                error: Some(error),
                duration,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use wiremock::matchers::{header, method};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    const INSIDE_ALLOWED: TargetPolicy = TargetPolicy {
        allow_http: true,
        allow_private: true,
    };
    const STRICT: TargetPolicy = TargetPolicy {
        allow_http: true,
        allow_private: false,
    };

    fn headers() -> Vec<(String, String)> {
        vec![("webhook-id".to_owned(), "msg_1".to_owned())]
    }

    #[tokio::test]
    async fn posts_the_body_with_its_headers_and_reports_the_status() {
        let receiver = MockServer::start().await;
        Mock::given(method("POST"))
            .and(header("webhook-id", "msg_1"))
            .respond_with(ResponseTemplate::new(204))
            .expect(1)
            .mount(&receiver)
            .await;
        let result = HttpWebhookSender::new(INSIDE_ALLOWED)
            .send(
                &format!("{}/hook", receiver.uri()),
                headers(),
                b"{}".to_vec(),
            )
            .await;
        assert_eq!(result.status_code, Some(204));
        assert!(result.delivered());
        assert_eq!(receiver.received_requests().await.unwrap()[0].body, b"{}");
    }

    #[tokio::test]
    async fn a_name_resolving_to_loopback_is_never_connected_to() {
        let receiver = MockServer::start().await;
        let port = receiver.address().port();
        for url in [
            format!("http://localhost:{port}/hook"),
            format!("http://127.0.0.1:{port}/hook"),
        ] {
            let result = HttpWebhookSender::new(STRICT)
                .send(&url, headers(), b"{}".to_vec())
                .await;
            assert_eq!(result.error, Some("blocked_address"), "{url}");
            assert_eq!(result.status_code, None);
        }
        assert!(receiver.received_requests().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn redirects_are_not_followed_and_slow_receivers_time_out() {
        let receiver = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(
                ResponseTemplate::new(307).insert_header("location", "http://169.254.169.254/"),
            )
            .mount(&receiver)
            .await;
        let sender = HttpWebhookSender::new(INSIDE_ALLOWED);
        let result = sender.send(&receiver.uri(), headers(), vec![]).await;
        assert_eq!(
            (result.status_code, result.error),
            (Some(307), Some("redirect"))
        );
        assert!(!result.delivered());

        let slow = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(5)))
            .mount(&slow)
            .await;
        let result = sender
            .with_timeout(Duration::from_millis(200))
            .send(&slow.uri(), headers(), vec![])
            .await;
        assert_eq!(result.error, Some("timeout"));
    }
}
