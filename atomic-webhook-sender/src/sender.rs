//! [`Outbound`]: the outbound ports over reqwest. One HTTP client per address policy, each
//! connecting only through a [`CheckedResolver`] carrying that policy, so connection pools never
//! mix what one policy admitted with what the other did; an IP-literal URL, which the client
//! does not resolve, is judged here before anything is sent.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use atomic_core::ports::{HostResolver, ResolveError, SendOutcome, WebhookRequest, WebhookSender};
use atomic_core::webhook::{AddressPolicy, WebhookUrl};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use reqwest::{Client, Response, redirect};
use tokio::time::{Instant, timeout, timeout_at};

use crate::config::OutboundConfig;
use crate::error::Error;
use crate::failure::describe;
use crate::resolve::{CheckedResolver, Refused, lookup};

/// How much of an answer's body is read: once this much has arrived the response is dropped,
/// closing the connection, whatever the receiver still sends.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The `user-agent` of every delivery.
pub const USER_AGENT: &str = concat!("atomic-webhooks/", env!("CARGO_PKG_VERSION"));

/// Resolves endpoint hosts and sends deliveries ([`HostResolver`] and [`WebhookSender`]).
/// Cheap to clone; build one at start-up and share it.
#[derive(Clone, Debug)]
pub struct Outbound {
    /// Connects only to globally routable addresses.
    strict: Client,
    /// Connects to special-purpose addresses too (`WEBHOOK_ALLOW_PRIVATE`).
    open: Client,
    /// Bounds a whole attempt and a lookup.
    timeout: Duration,
}

impl Outbound {
    /// The outbound client with `config`'s limits. Fails on a zero timeout or when TLS cannot
    /// be set up.
    pub fn new(config: OutboundConfig) -> Result<Self, Error> {
        if config.timeout.is_zero() || config.connect_timeout.is_zero() {
            return Err(Error::ZeroTimeout);
        }
        let strict = AddressPolicy {
            allow_private: false,
        };
        let open = AddressPolicy {
            allow_private: true,
        };
        Ok(Self {
            strict: client(&config, strict)?,
            open: client(&config, open)?,
            timeout: config.timeout,
        })
    }

    /// The client whose resolver enforces `policy`.
    fn client(&self, policy: AddressPolicy) -> &Client {
        // Destructured field by field: a new policy field must be given its own client here.
        let AddressPolicy { allow_private } = policy;
        if allow_private {
            &self.open
        } else {
            &self.strict
        }
    }

    /// `POST`s `request` through `policy`'s client and returns the answer's head.
    async fn post(
        &self,
        request: &WebhookRequest,
        policy: AddressPolicy,
    ) -> Result<Response, String> {
        let headers = headers(request)?;
        self.client(policy)
            .post(request.url.as_str())
            .headers(headers)
            .body(request.body.clone())
            .send()
            .await
            .map_err(|error| describe(&error))
    }
}

/// A client that follows no redirect, uses no proxy, never retries and resolves every name
/// through a [`CheckedResolver`] with `policy`.
fn client(config: &OutboundConfig, policy: AddressPolicy) -> Result<Client, Error> {
    Client::builder()
        .user_agent(USER_AGENT)
        .redirect(redirect::Policy::none())
        .no_proxy()
        .retry(reqwest::retry::never())
        .http1_only()
        .connect_timeout(config.effective_connect_timeout())
        .dns_resolver(Arc::new(CheckedResolver::new(policy)))
        .build()
        .map_err(|error| Error::Client(Box::new(error)))
}

/// The Standard Webhooks headers of `request`; the signature is marked sensitive so no
/// `Debug` of the request shows it.
fn headers(request: &WebhookRequest) -> Result<HeaderMap, String> {
    let invalid = |name: &str| format!("invalid header: {name}");
    let id = HeaderValue::from_str(&request.id).map_err(|_| invalid("webhook-id"))?;
    let mut signature =
        HeaderValue::from_str(&request.signature).map_err(|_| invalid("webhook-signature"))?;
    signature.set_sensitive(true);
    let mut headers = HeaderMap::with_capacity(4);
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert("webhook-id", id);
    headers.insert("webhook-timestamp", HeaderValue::from(request.timestamp));
    headers.insert("webhook-signature", signature);
    Ok(headers)
}

/// Reads and discards `response`'s body until it ends, [`MAX_ANSWER_BYTES`] have arrived or
/// `deadline` passes, then drops it (closing the connection if the body goes on). Returns how
/// much was read; nothing is kept, so memory stays bounded by one chunk.
async fn drain(mut response: Response, deadline: Instant) -> usize {
    let mut read = 0;
    while read < MAX_ANSWER_BYTES {
        match timeout_at(deadline, response.chunk()).await {
            Ok(Ok(Some(chunk))) => read += chunk.len(),
            _ => break,
        }
    }
    read
}

/// `Err` with the `Failed` text if `policy` refuses a URL's literal address.
fn judge_literal(url: &WebhookUrl, policy: AddressPolicy) -> Result<(), String> {
    match url.literal_ip().map(|ip| policy.admits(ip)) {
        Some(Err(range)) => Err(Refused { range }.to_string()),
        _ => Ok(()),
    }
}

/// The host to name in logs: never the whole URL, whose path or query may hold a token.
fn log_host(url: &WebhookUrl) -> String {
    match (url.domain(), url.literal_ip()) {
        (Some(name), _) => name.to_owned(),
        (None, Some(ip)) => ip.to_string(),
        (None, None) => String::new(),
    }
}

#[async_trait]
impl WebhookSender for Outbound {
    async fn send(&self, request: &WebhookRequest, policy: AddressPolicy) -> SendOutcome {
        let host = log_host(&request.url);
        if let Err(refused) = judge_literal(&request.url, policy) {
            tracing::debug!(%host, outcome = %refused, "webhook attempt");
            return SendOutcome::Failed(refused);
        }
        let deadline = Instant::now() + self.timeout;
        let head = match timeout_at(deadline, self.post(request, policy)).await {
            Ok(Ok(head)) => head,
            Ok(Err(failure)) => {
                tracing::debug!(%host, outcome = %failure, "webhook attempt");
                return SendOutcome::Failed(failure);
            }
            Err(_) => {
                tracing::debug!(%host, outcome = "timeout", "webhook attempt");
                return SendOutcome::Failed("timeout".to_owned());
            }
        };
        // The status is the answer; the body is read only so a short one leaves the connection
        // reusable, and a long or slow one is cut off.
        let status = head.status().as_u16();
        let read = drain(head, deadline).await;
        tracing::debug!(%host, status, read, "webhook attempt");
        SendOutcome::Answered(status)
    }
}

#[async_trait]
impl HostResolver for Outbound {
    async fn resolve(&self, url: &WebhookUrl) -> Result<Vec<IpAddr>, ResolveError> {
        if let Some(ip) = url.literal_ip() {
            return Ok(vec![ip]);
        }
        let Some(host) = url.domain() else {
            return Err(ResolveError("the URL names no host".to_owned()));
        };
        match timeout(self.timeout, lookup(host, url.port())).await {
            Ok(Ok(addresses)) if !addresses.is_empty() => Ok(addresses),
            Ok(Ok(_)) => Err(ResolveError(format!("{host} resolves to no address"))),
            Ok(Err(error)) => Err(ResolveError(format!("cannot resolve {host}: {error}"))),
            Err(_) => Err(ResolveError(format!("resolving {host} timed out"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(id: &str, signature: &str) -> WebhookRequest {
        WebhookRequest {
            url: WebhookUrl::parse("http://127.0.0.1:9/").unwrap(),
            id: id.to_owned(),
            timestamp: 1_700_000_000,
            signature: signature.to_owned(),
            body: "{}".into(),
        }
    }

    #[test]
    fn headers_carry_the_signature_hidden_from_debug() {
        let headers = headers(&request("evt_1", "v1,c2lnbmF0dXJl")).unwrap();
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(headers["webhook-id"], "evt_1");
        assert_eq!(headers["webhook-timestamp"], "1700000000");
        assert_eq!(headers["webhook-signature"], "v1,c2lnbmF0dXJl");
        assert!(headers["webhook-signature"].is_sensitive());
        assert!(!format!("{headers:?}").contains("c2lnbmF0dXJl"));
    }

    #[test]
    fn a_value_no_header_can_carry_fails_without_echoing_it() {
        let failure = headers(&request("evt_1", "v1,abc\r\nx-injected: 1")).unwrap_err();
        assert_eq!(failure, "invalid header: webhook-signature");
        let failure = headers(&request("evt\n1", "v1,abc")).unwrap_err();
        assert_eq!(failure, "invalid header: webhook-id");
    }

    #[test]
    fn zero_timeouts_are_refused_at_start_up() {
        let zero = OutboundConfig::new(Duration::ZERO);
        assert!(matches!(Outbound::new(zero), Err(Error::ZeroTimeout)));
        let zero_connect = OutboundConfig::default().with_connect_timeout(Duration::ZERO);
        assert!(matches!(
            Outbound::new(zero_connect),
            Err(Error::ZeroTimeout)
        ));
    }
}
