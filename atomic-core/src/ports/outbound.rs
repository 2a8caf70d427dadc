//! [`HostResolver`] and [`WebhookSender`]: the outside network as webhooks need it. Resolving
//! an endpoint's host at creation (to refuse internal addresses) and sending one signed
//! delivery are the only outbound I/O Atomic does; both are merchant-steered, so the adapter
//! that implements them must connect only to addresses the [`AddressPolicy`] admits, to the
//! very address it checked, follow no redirect and bound time and bytes.

use std::net::IpAddr;

use async_trait::async_trait;
use bytes::Bytes;

use crate::webhook::{AddressPolicy, WebhookUrl};

/// Why a host could not be resolved.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ResolveError(pub String);

/// Resolves endpoint hosts, as the endpoint service checks them at creation.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait HostResolver: Send + Sync + 'static {
    /// Every address `url`'s host resolves to (the literal itself for an IP literal). A name
    /// with no address is an error.
    async fn resolve(&self, url: &WebhookUrl) -> Result<Vec<IpAddr>, ResolveError>;
}

/// One delivery attempt as it goes out: the event as the JSON body and the Standard Webhooks
/// headers, already signed.
#[derive(Clone, Debug)]
pub struct WebhookRequest {
    /// Where to `POST`.
    pub url: WebhookUrl,
    /// `webhook-id`: the event id.
    pub id: String,
    /// `webhook-timestamp`: Unix seconds.
    pub timestamp: i64,
    /// `webhook-signature`: `v1,<base64>`.
    pub signature: String,
    /// The event JSON.
    pub body: Bytes,
}

/// What one attempt got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendOutcome {
    /// The receiver answered with this status (any: 2xx, 3xx not followed, 4xx, 5xx).
    Answered(u16),
    /// No answer: refused address, connection error, timeout. The text names which, with no
    /// secret in it.
    Failed(String),
}

impl SendOutcome {
    /// Whether the attempt delivered the event (a 2xx).
    pub fn delivered(&self) -> bool {
        matches!(self, Self::Answered(code) if (200..300).contains(code))
    }
}

/// Sends deliveries, as the dispatcher makes its attempts.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait WebhookSender: Send + Sync + 'static {
    /// Makes one attempt: resolves the host (unless it is an IP literal), refuses it without
    /// connecting if any address is one `policy` does not admit, connects to a checked address,
    /// `POST`s `request`, reads at most 64 KiB of the answer, and gives up at the sender's
    /// timeout. Never follows a redirect.
    async fn send(&self, request: &WebhookRequest, policy: AddressPolicy) -> SendOutcome;
}
