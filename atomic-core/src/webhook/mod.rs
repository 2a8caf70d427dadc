//! Webhooks: where events may be sent. [`address`] decides which IP addresses a delivery may
//! connect to (only globally routable ones, unless private addresses are allowed), and
//! [`WebhookUrl`] is an endpoint URL as API.md accepts it. Both are pure: resolving a name and
//! connecting to the address that was checked belong to the adapter that delivers.

pub mod address;
mod url;

pub use address::{AddressPolicy, Reach};
pub use url::WebhookUrl;
