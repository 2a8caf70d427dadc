//! Which addresses a webhook delivery may connect to (TEST-MATRIX row 40). An endpoint URL is
//! merchant input, so it must never reach the platform's own network: every address that is
//! not globally routable by the IANA special-purpose registries (RFC 6890 and its updates) is
//! refused, including IPv6 forms that carry an IPv4 address (mapped, compatible, NAT64, 6to4),
//! judged by the address they carry.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Where an address leads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    /// Globally routable: a delivery may connect.
    Global,
    /// A special-purpose range, named (`"loopback"`, `"private"`, ...): never connected to
    /// unless private addresses are allowed.
    Special(&'static str),
}

/// Whether deliveries may connect to special-purpose addresses (`WEBHOOK_ALLOW_PRIVATE`, for
/// tests and on-premise receivers).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AddressPolicy {
    /// Connect to special-purpose addresses too.
    pub allow_private: bool,
}

impl AddressPolicy {
    /// `Ok` if a delivery may connect to `ip`; else the name of the range that refuses it.
    pub fn admits(&self, ip: IpAddr) -> Result<(), &'static str> {
        match reach(ip) {
            Reach::Global => Ok(()),
            Reach::Special(_) if self.allow_private => Ok(()),
            Reach::Special(range) => Err(range),
        }
    }
}

/// Where `ip` leads.
pub fn reach(ip: IpAddr) -> Reach {
    match ip {
        IpAddr::V4(v4) => reach_v4(v4),
        IpAddr::V6(v6) => reach_v6(v6),
    }
}

/// IPv4 special-purpose ranges as (first octets, prefix length, name).
const V4_SPECIAL: &[([u8; 4], u8, &str)] = &[
    ([0, 0, 0, 0], 8, "this network"),
    ([10, 0, 0, 0], 8, "private"),
    ([100, 64, 0, 0], 10, "shared address space"),
    ([127, 0, 0, 0], 8, "loopback"),
    ([169, 254, 0, 0], 16, "link-local"),
    ([172, 16, 0, 0], 12, "private"),
    ([192, 0, 0, 0], 24, "IETF protocol assignments"),
    ([192, 0, 2, 0], 24, "documentation"),
    ([192, 31, 196, 0], 24, "AS112"),
    ([192, 52, 193, 0], 24, "AMT"),
    ([192, 88, 99, 0], 24, "6to4 relay anycast"),
    ([192, 168, 0, 0], 16, "private"),
    ([192, 175, 48, 0], 24, "AS112"),
    ([198, 18, 0, 0], 15, "benchmarking"),
    ([198, 51, 100, 0], 24, "documentation"),
    ([203, 0, 113, 0], 24, "documentation"),
    ([224, 0, 0, 0], 4, "multicast"),
    ([240, 0, 0, 0], 4, "reserved"),
];

fn reach_v4(ip: Ipv4Addr) -> Reach {
    let bits = u32::from(ip);
    V4_SPECIAL
        .iter()
        .find(|(net, len, _)| within(bits, u32::from_be_bytes(*net), *len))
        .map_or(Reach::Global, |(_, _, name)| Reach::Special(name))
}

/// Whether the top `len` bits of `bits` are `net`'s.
fn within(bits: u32, net: u32, len: u8) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    bits & mask == net & mask
}

/// As [`within`], for IPv6.
fn within_v6(bits: u128, net: u128, len: u8) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
    bits & mask == net & mask
}

/// IPv6 special-purpose ranges as (network, prefix length, name); the forms that carry an
/// IPv4 address are judged by it first ([`carried_v4`]).
const V6_SPECIAL: &[(u128, u8, &str)] = &[
    (0x0064_ff9b_0001 << 80, 48, "local-use NAT64"),
    (0x0100 << 112, 64, "discard-only"),
    (0x2001_0db8 << 96, 32, "documentation"),
    (0x2001 << 112, 23, "IETF protocol assignments"),
    (0x3fff << 112, 20, "documentation"),
    (0x5f00 << 112, 16, "segment routing"),
    (0xfc00 << 112, 7, "unique-local"),
    (0xfe80 << 112, 10, "link-local"),
    (0xfec0 << 112, 10, "site-local"),
    (0xff00 << 112, 8, "multicast"),
];

fn reach_v6(ip: Ipv6Addr) -> Reach {
    let bits = u128::from(ip);
    if ip.is_unspecified() {
        return Reach::Special("unspecified");
    }
    if ip.is_loopback() {
        return Reach::Special("loopback");
    }
    if let Some(v4) = carried_v4(ip) {
        return match reach_v4(v4) {
            // `::a.b.c.d` is deprecated (RFC 4291): no global address is written so.
            Reach::Global if bits >> 32 == 0 => Reach::Special("IPv4-compatible"),
            other => other,
        };
    }
    V6_SPECIAL
        .iter()
        .find(|(net, len, _)| within_v6(bits, *net, *len))
        .map_or(Reach::Global, |(_, _, name)| Reach::Special(name))
}

/// The IPv4 address an IPv6 address carries: IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible
/// (`::a.b.c.d`), NAT64 well-known prefix (`64:ff9b::a.b.c.d`) or 6to4 (`2002:aabb:ccdd::`).
fn carried_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = u128::from(ip);
    let low = Ipv4Addr::from(bits as u32);
    match bits >> 32 {
        0 | 0xffff | 0x0064_ff9b_0000_0000_0000_0000 => Some(low),
        _ if bits >> 112 == 0x2002 => Some(Ipv4Addr::from((bits >> 80) as u32)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn special_ipv4_ranges_are_refused_with_their_name() {
        for (literal, range) in [
            ("127.0.0.1", "loopback"),
            ("127.255.255.254", "loopback"),
            ("10.0.0.1", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local"),
            ("100.64.0.1", "shared address space"),
            ("100.127.255.255", "shared address space"),
            ("0.0.0.0", "this network"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.250", "multicast"),
            ("255.255.255.255", "reserved"),
            ("192.0.2.10", "documentation"),
            ("198.51.100.7", "documentation"),
            ("203.0.113.9", "documentation"),
            ("198.19.0.1", "benchmarking"),
            ("192.0.0.170", "IETF protocol assignments"),
        ] {
            assert_eq!(reach(ip(literal)), Reach::Special(range), "{literal}");
        }
    }

    #[test]
    fn global_ipv4_addresses_next_to_the_ranges_are_reachable() {
        for literal in [
            "8.8.8.8",
            "1.1.1.1",
            "11.0.0.1",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "169.253.255.255",
            "192.167.255.255",
            "192.169.0.0",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
        ] {
            assert_eq!(reach(ip(literal)), Reach::Global, "{literal}");
        }
    }

    #[test]
    fn special_ipv6_ranges_and_carried_ipv4_are_refused() {
        for (literal, range) in [
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("fd00::1", "unique-local"),
            ("fc00::1", "unique-local"),
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            ("fec0::1", "site-local"),
            ("ff02::1", "multicast"),
            ("2001:db8::1", "documentation"),
            ("2001::1", "IETF protocol assignments"),
            ("100::1", "discard-only"),
            ("64:ff9b:1::1", "local-use NAT64"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:7f00:1", "loopback"),
            ("::ffff:169.254.169.254", "link-local"),
            ("::ffff:10.1.2.3", "private"),
            ("::127.0.0.1", "loopback"),
            ("::8.8.8.8", "IPv4-compatible"),
            ("64:ff9b::a9fe:a9fe", "link-local"),
            ("64:ff9b::192.168.0.1", "private"),
            ("2002:7f00:1::", "loopback"),
            ("2002:c0a8:101::1", "private"),
        ] {
            assert_eq!(reach(ip(literal)), Reach::Special(range), "{literal}");
        }
    }

    #[test]
    fn global_ipv6_addresses_are_reachable() {
        for literal in [
            "2606:4700:4700::1111",
            "2a00:1450:4001:80b::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "2001:200::1",
        ] {
            assert_eq!(reach(ip(literal)), Reach::Global, "{literal}");
        }
    }

    #[test]
    fn allowing_private_addresses_admits_them_all() {
        let strict = AddressPolicy::default();
        let open = AddressPolicy {
            allow_private: true,
        };
        assert_eq!(strict.admits(ip("127.0.0.1")), Err("loopback"));
        assert_eq!(strict.admits(ip("8.8.8.8")), Ok(()));
        assert_eq!(open.admits(ip("127.0.0.1")), Ok(()));
        assert_eq!(open.admits(ip("::1")), Ok(()));
    }
}
