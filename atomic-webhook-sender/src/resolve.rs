//! Name resolution for outbound requests. [`lookup`] is the one DNS lookup of a host;
//! [`CheckedResolver`] is the resolver the HTTP client connects through: it looks the host up,
//! refuses the whole name if any address is one its [`AddressPolicy`] does not admit, and hands
//! the client exactly the addresses it judged, so what is connected to is what was checked.

use std::net::{IpAddr, SocketAddr};

use atomic_core::webhook::AddressPolicy;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// A name refused because one of its addresses is in a range the policy does not admit. Its
/// text is the delivery's `Failed` text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("refused address: {range}")]
pub(crate) struct Refused {
    /// The special-purpose range of the refused address (`"loopback"`, `"private"`, ...).
    pub(crate) range: &'static str,
}

/// A name that resolved, but to no address.
#[derive(Clone, Copy, Debug, thiserror::Error)]
#[error("the name resolves to no address")]
pub(crate) struct NoAddress;

/// Every distinct address `host` resolves to, in the resolver's order. An IP literal is itself.
pub(crate) async fn lookup(host: &str, port: u16) -> std::io::Result<Vec<IpAddr>> {
    let mut addresses: Vec<IpAddr> = Vec::new();
    for socket in tokio::net::lookup_host((host, port)).await? {
        if !addresses.contains(&socket.ip()) {
            addresses.push(socket.ip());
        }
    }
    Ok(addresses)
}

/// `Ok` if `policy` admits every address; else the first refusal. One internal address refuses
/// the name: a receiver's name that also leads inside is not delivered to at all.
pub(crate) fn judge(policy: AddressPolicy, addresses: &[IpAddr]) -> Result<(), Refused> {
    addresses
        .iter()
        .try_for_each(|ip| policy.admits(*ip).map_err(|range| Refused { range }))
}

/// The HTTP client's resolver: one lookup per connection, judged by `policy`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CheckedResolver {
    policy: AddressPolicy,
}

impl CheckedResolver {
    /// A resolver that admits only what `policy` admits.
    pub(crate) fn new(policy: AddressPolicy) -> Self {
        Self { policy }
    }
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            // Port 0: the client puts in the URL's port.
            let addresses = lookup(&host, 0).await?;
            if addresses.is_empty() {
                return Err(NoAddress.into());
            }
            judge(policy, &addresses)?;
            let checked = addresses.into_iter().map(|ip| SocketAddr::new(ip, 0));
            Ok(Box::new(checked) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_internal_address_refuses_the_whole_name() {
        let strict = AddressPolicy::default();
        let mixed = [ip("8.8.8.8"), ip("10.0.0.1"), ip("::1")];
        assert_eq!(judge(strict, &mixed), Err(Refused { range: "private" }));
        assert_eq!(
            judge(strict, &[ip("8.8.8.8"), ip("2606:4700::1111")]),
            Ok(())
        );
        let open = AddressPolicy {
            allow_private: true,
        };
        assert_eq!(judge(open, &mixed), Ok(()));
    }

    #[tokio::test]
    async fn an_ip_literal_looks_up_to_itself() {
        assert_eq!(lookup("127.0.0.1", 0).await.unwrap(), vec![ip("127.0.0.1")]);
    }
}
