//! The client's address as rate limits see it: the TCP peer, or behind trusted proxies the
//! address the outermost of them saw.

use std::net::IpAddr;

use actix_web::HttpRequest;
use nb_domain::rate_limit::ClientAddress;

/// Where the client's address comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddressSource {
    /// How many proxies in front of this server append to `X-Forwarded-For` (0: trust none,
    /// take the TCP peer).
    pub trusted_proxy_hops: usize,
}

impl ClientAddressSource {
    /// The peer, or, behind `trusted_proxy_hops` proxies, the address the outermost trusted
    /// proxy saw: the `trusted_proxy_hops`-th entry of `X-Forwarded-For` from the right
    /// (entries further left are whatever the client sent, and are never trusted). When the
    /// header has fewer entries than that, the peer.
    pub fn client_address(&self, request: &HttpRequest) -> Option<ClientAddress> {
        let peer = request.peer_addr().map(|address| address.ip());
        let forwarded = (self.trusted_proxy_hops > 0)
            .then(|| forwarded_for(request, self.trusted_proxy_hops))
            .flatten();
        forwarded.or(peer).map(ClientAddress::new)
    }
}

fn forwarded_for(request: &HttpRequest, hops: usize) -> Option<IpAddr> {
    let entries: Vec<&str> = request
        .headers()
        .get_all("x-forwarded-for")
        .filter_map(|value| value.to_str().ok())
        .flat_map(|list| list.split(','))
        .map(str::trim)
        .collect();
    let index = entries.len().checked_sub(hops)?;
    entries[index].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn only_the_trusted_hops_of_x_forwarded_for_count() {
        let request = |forwarded: &str| {
            TestRequest::default()
                .peer_addr("10.0.0.1:5000".parse().unwrap())
                .insert_header(("x-forwarded-for", forwarded))
                .to_http_request()
        };
        let address = |hops, forwarded| {
            ClientAddressSource {
                trusted_proxy_hops: hops,
            }
            .client_address(&request(forwarded))
            .map(|address| address.network().to_string())
        };
        // One proxy appends the client it saw: the right-most entry; what the client wrote
        // itself (to the left) is ignored.
        assert_eq!(
            address(1, "6.6.6.6, 203.0.113.7").as_deref(),
            Some("203.0.113.7")
        );
        assert_eq!(
            address(2, "6.6.6.6, 203.0.113.7, 10.0.0.2").as_deref(),
            Some("203.0.113.7")
        );
        assert_eq!(address(0, "6.6.6.6").as_deref(), Some("10.0.0.1"));
        assert_eq!(address(3, "203.0.113.7").as_deref(), Some("10.0.0.1"));
        assert_eq!(address(1, "2001:db8::1").as_deref(), Some("2001:db8::"));
    }
}
