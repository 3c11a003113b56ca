//! Where webhooks may be sent: `https` URLs to public addresses, unless the operator allows
//! plain `http` (`NB_WEBHOOK_ALLOW_HTTP`) or private targets
//! (`NB_WEBHOOK_ALLOW_PRIVATE_TARGETS`). A URL naming a private address literally is refused
//! when it is registered; a name is resolved at every delivery and each address it resolves
//! to is checked again, so a name that resolves inside (or is rebound to) is never connected to.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What the operator allows webhook targets to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TargetPolicy {
    pub allow_http: bool,
    pub allow_private: bool,
}

/// Why a webhook URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidWebhookUrl {
    #[error("url must be an absolute http(s) URL")]
    NotAUrl,
    #[error("url must use https (plain http is allowed only with NB_WEBHOOK_ALLOW_HTTP=true)")]
    NotHttps,
    #[error("url must not carry a user name or password")]
    Credentials,
    #[error(
        "url names a private, loopback, link-local or metadata address (allowed only with NB_WEBHOOK_ALLOW_PRIVATE_TARGETS=true)"
    )]
    PrivateAddress,
    #[error("url must be at most 2048 characters")]
    TooLong,
}

/// A checked webhook URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookUrl(String);

impl WebhookUrl {
    pub fn parse(raw: &str, policy: TargetPolicy) -> Result<Self, InvalidWebhookUrl> {
        if raw.len() > 2048 {
            return Err(InvalidWebhookUrl::TooLong);
        }
        let url = url::Url::parse(raw.trim()).map_err(|_| InvalidWebhookUrl::NotAUrl)?;
        match url.scheme() {
            "https" => {}
            "http" if policy.allow_http => {}
            "http" => return Err(InvalidWebhookUrl::NotHttps),
            _ => return Err(InvalidWebhookUrl::NotAUrl),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(InvalidWebhookUrl::Credentials);
        }
        let literal = match url.host() {
            Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            Some(url::Host::Domain(_)) => None,
            None => return Err(InvalidWebhookUrl::NotAUrl),
        };
        if let Some(ip) = literal
            && !policy.permits(ip)
        {
            return Err(InvalidWebhookUrl::PrivateAddress);
        }
        Ok(Self(url.into()))
    }

    /// A URL read back from storage (checked when it was registered).
    pub fn from_stored(url: String) -> Self {
        Self(url)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TargetPolicy {
    /// Whether a delivery may connect to `ip`.
    pub fn permits(self, ip: IpAddr) -> bool {
        self.allow_private || is_public(ip)
    }
}

/// Whether `ip` is a public unicast address: not private, loopback, link-local (cloud
/// metadata services live there), carrier-grade NAT, unique-local, multicast, documentation
/// or reserved; IPv4 inside IPv6 (mapped, NAT64) is judged as the IPv4 address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => is_public_v4(ip),
        IpAddr::V6(ip) => is_public_v6(ip),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_multicast()
        || a == 0
        // Carrier-grade NAT (100.64.0.0/10), where some clouds put their metadata service.
        || (a == 100 && (64..128).contains(&b))
        // IETF protocol assignments (192.0.0.0/24) and benchmarking (198.18.0.0/15).
        || (a == 192 && b == 0 && c == 0)
        || (a == 198 && (b == 18 || b == 19))
        // Reserved (240.0.0.0/4).
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let segments = ip.segments();
    // NAT64 (64:ff9b::/96): the IPv4 address it carries.
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [a, b] = segments[6].to_be_bytes();
        let [c, d] = segments[7].to_be_bytes();
        return is_public_v4(Ipv4Addr::new(a, b, c, d));
    }
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        // Unique local (fc00::/7), link-local (fe80::/10), site-local (fec0::/10).
        || (segments[0] & 0xfe00) == 0xfc00
        || (segments[0] & 0xffc0) == 0xfe80
        || (segments[0] & 0xffc0) == 0xfec0
        // Documentation (2001:db8::/32), and IPv4-compatible (::/96).
        || (segments[0] == 0x2001 && segments[1] == 0x0db8)
        || segments[..6] == [0, 0, 0, 0, 0, 0])
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRICT: TargetPolicy = TargetPolicy {
        allow_http: false,
        allow_private: false,
    };

    #[test]
    fn only_https_unless_http_is_allowed() {
        assert!(WebhookUrl::parse("https://hooks.example.com/nb", STRICT).is_ok());
        assert_eq!(
            WebhookUrl::parse("http://hooks.example.com/nb", STRICT),
            Err(InvalidWebhookUrl::NotHttps)
        );
        let lax = TargetPolicy {
            allow_http: true,
            ..STRICT
        };
        assert!(WebhookUrl::parse("http://hooks.example.com/nb", lax).is_ok());
        assert_eq!(
            WebhookUrl::parse("ftp://hooks.example.com", lax),
            Err(InvalidWebhookUrl::NotAUrl)
        );
        assert_eq!(
            WebhookUrl::parse("https://user:pw@hooks.example.com", STRICT),
            Err(InvalidWebhookUrl::Credentials)
        );
        assert_eq!(
            WebhookUrl::parse("not a url", STRICT),
            Err(InvalidWebhookUrl::NotAUrl)
        );
    }

    #[test]
    fn literal_inside_addresses_are_refused() {
        for url in [
            "https://127.0.0.1/hook",
            "https://10.1.2.3/hook",
            "https://172.16.0.1/hook",
            "https://192.168.1.1/hook",
            "https://169.254.169.254/latest/meta-data",
            "https://100.100.100.200/",
            "https://0.0.0.0/",
            "https://[::1]/hook",
            "https://[fd00::1]/hook",
            "https://[fe80::1]/hook",
            "https://[::ffff:127.0.0.1]/hook",
            "https://[64:ff9b::a00:1]/hook",
            "https://2130706433/hook",
        ] {
            assert_eq!(
                WebhookUrl::parse(url, STRICT),
                Err(InvalidWebhookUrl::PrivateAddress),
                "{url}"
            );
        }
        assert!(WebhookUrl::parse("https://8.8.8.8/hook", STRICT).is_ok());
        assert!(WebhookUrl::parse("https://[2606:4700::1111]/hook", STRICT).is_ok());
        let lax = TargetPolicy {
            allow_private: true,
            ..STRICT
        };
        assert!(WebhookUrl::parse("https://127.0.0.1/hook", lax).is_ok());
    }
}
