//! Webhooks: what events exist and who receives them, where deliveries may go and when they
//! are retried. A [`WebhookEndpoint`] (with its secret) receives, by its owner and its
//! [`Subscription`], events of each [`EventType`](crate::event::EventType);
//! [`address`] decides which IP addresses a delivery may connect to (only globally routable
//! ones, unless private addresses are allowed) and [`WebhookUrl`] is an endpoint URL as API.md
//! accepts it; [`RetrySchedule`] is the retry arithmetic. All pure: resolving a name and
//! connecting to the address that was checked belong to the adapter that delivers.

pub mod address;
mod delivery;
mod endpoint;
mod retry;
mod subscription;
mod url;

pub use crate::event::EventType;
pub use address::{AddressPolicy, Reach};
pub use delivery::{DeliveryStatus, ENDPOINT_DELETED, WebhookDelivery, deliveries_for};
pub use endpoint::{MAX_ENDPOINTS_PER_OWNER, WebhookEndpoint};
pub use retry::{DEFAULT_SCHEDULE, RetrySchedule};
pub use subscription::Subscription;
pub use url::WebhookUrl;
