//! Atomic's outbound network for webhooks: [`Outbound`] implements the core's
//! [`HostResolver`](atomic_core::ports::HostResolver) and
//! [`WebhookSender`](atomic_core::ports::WebhookSender) over reqwest with rustls.
//!
//! Endpoint URLs are merchant input, so every delivery treats the network as hostile ground
//! (DESIGN.md): the host is resolved once, by this crate, and every address it resolves to is
//! judged by the caller's [`AddressPolicy`](atomic_core::webhook::AddressPolicy) before anything
//! connects; the connection goes only to those checked addresses (no second lookup, no proxy);
//! a redirect is an answer, never followed; one timeout bounds the whole attempt and at most
//! 64 KiB of the answer is read. The signature and the body are never logged.
#![warn(missing_docs)]

mod config;
mod error;
mod failure;
mod resolve;
mod sender;

pub use config::OutboundConfig;
pub use error::Error;
pub use sender::{MAX_ANSWER_BYTES, Outbound, USER_AGENT};
