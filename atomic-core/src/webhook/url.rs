//! An endpoint URL as API.md accepts it: `http` or `https`, at most 2,048 characters, a host,
//! no credentials. Parsed by the WHATWG URL rules (the `url` crate), which is also how the
//! numeric host forms an attacker may try (`2130706433`, `0x7f.1`, `0177.0.0.1`, `127.1`) come
//! out as the one address they name, for [`super::address`] to judge.

use std::net::IpAddr;

use url::{Host, Url};

use crate::error::Invalid;

/// The longest URL accepted.
const MAX_LEN: usize = 2_048;

/// A webhook endpoint's URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookUrl(Url);

impl WebhookUrl {
    /// Parses `raw`; refuses anything API.md does not accept.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        if raw.len() > MAX_LEN {
            return Err(Invalid::new("url must be at most 2048 characters"));
        }
        let url = Url::parse(raw).map_err(|_| Invalid::new("url must be an absolute URL"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Invalid::new("url must be http or https"));
        }
        if url.host().is_none() {
            return Err(Invalid::new("url must name a host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Invalid::new("url must not carry credentials"));
        }
        Ok(Self(url))
    }

    /// The address the URL names literally, if it names one rather than a host name.
    pub fn literal_ip(&self) -> Option<IpAddr> {
        match self.0.host()? {
            Host::Ipv4(v4) => Some(IpAddr::V4(v4)),
            Host::Ipv6(v6) => Some(IpAddr::V6(v6)),
            Host::Domain(_) => None,
        }
    }

    /// The host name to resolve, if the URL names one.
    pub fn domain(&self) -> Option<&str> {
        match self.0.host()? {
            Host::Domain(name) => Some(name),
            Host::Ipv4(_) | Host::Ipv6(_) => None,
        }
    }

    /// The port to connect to (the scheme's own when none is written).
    pub fn port(&self) -> u16 {
        self.0.port_or_known_default().unwrap_or(80)
    }

    /// The URL as normalised text (what is stored and shown).
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::address::{Reach, reach};

    fn refused_range(raw: &str) -> &'static str {
        let url = WebhookUrl::parse(raw).unwrap();
        let ip = url
            .literal_ip()
            .unwrap_or_else(|| panic!("{raw} names an address"));
        match reach(ip) {
            Reach::Special(range) => range,
            Reach::Global => panic!("{raw} ({ip}) must be refused"),
        }
    }

    #[test]
    fn every_notation_of_an_internal_address_is_that_address() {
        for (raw, range) in [
            ("http://127.0.0.1/hook", "loopback"),
            ("http://2130706433/", "loopback"),
            ("http://0x7f000001/", "loopback"),
            ("http://0x7f.1/", "loopback"),
            ("http://0177.0.0.1/", "loopback"),
            ("http://017700000001/", "loopback"),
            ("http://127.1/", "loopback"),
            ("http://[::1]:8080/", "loopback"),
            ("http://[::ffff:127.0.0.1]/", "loopback"),
            ("http://[::ffff:7f00:1]/", "loopback"),
            ("http://10.0.0.1/", "private"),
            ("http://0xa000001/", "private"),
            ("http://192.168.0.1/", "private"),
            ("http://3232235521/", "private"),
            ("http://172.16.0.1/", "private"),
            ("http://169.254.169.254/latest/meta-data/", "link-local"),
            ("http://0xa9fea9fe/", "link-local"),
            ("http://[fe80::1]/", "link-local"),
            ("http://[fd12:3456::1]/", "unique-local"),
            ("http://0.0.0.0/", "this network"),
            ("http://0/", "this network"),
            ("http://[::]/", "unspecified"),
            ("http://224.0.0.1/", "multicast"),
        ] {
            assert_eq!(refused_range(raw), range, "{raw}");
        }
    }

    #[test]
    fn a_public_address_or_a_name_passes_the_literal_check() {
        let public = WebhookUrl::parse("https://8.8.8.8/hook").unwrap();
        assert_eq!(reach(public.literal_ip().unwrap()), Reach::Global);
        assert_eq!(public.port(), 443);
        let named = WebhookUrl::parse("https://hooks.example.com:8443/in").unwrap();
        assert_eq!(named.literal_ip(), None);
        assert_eq!(named.domain(), Some("hooks.example.com"));
        assert_eq!(named.port(), 8443);
        let localhost = WebhookUrl::parse("http://localhost/").unwrap();
        assert_eq!(
            localhost.domain(),
            Some("localhost"),
            "judged once resolved"
        );
    }

    #[test]
    fn urls_the_contract_does_not_accept_are_refused() {
        let long = format!("https://example.com/{}", "a".repeat(2_048));
        for raw in [
            "",
            "example.com/hook",
            "ftp://example.com/",
            "file:///etc/passwd",
            "javascript:alert(1)",
            "https://user:pass@example.com/",
            "https://user@example.com/",
            "http://",
            long.as_str(),
        ] {
            assert!(WebhookUrl::parse(raw).is_err(), "{raw:.60}");
        }
        let exactly = format!("https://example.com/{}", "a".repeat(2_048 - 20));
        assert_eq!(exactly.len(), 2_048);
        assert!(WebhookUrl::parse(&exactly).is_ok());
    }
}
