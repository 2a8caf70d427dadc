//! [`OutboxStore`]: the outbox as the webhook dispatcher and the retention sweep see it. Due
//! deliveries are claimed under a lease, so any number of dispatchers share the work and an
//! attempt whose dispatcher died is claimed again when its lease runs out; at most a bounded
//! number of one endpoint's deliveries are held at once, so a receiver that hangs holds only
//! its own.

use std::time::Duration;

use async_trait::async_trait;
use atomic_webhook_signature::Secret;

use crate::error::Result;
use crate::ports::LeaseId;
use crate::time::Timestamp;
use crate::webhook::{WebhookDelivery, WebhookUrl};

/// Where a claimed delivery goes, and what it carries.
#[derive(Clone, Debug)]
pub struct Target {
    /// The endpoint's URL.
    pub url: WebhookUrl,
    /// The endpoint's signing secret.
    pub secret: Secret,
    /// The event's JSON.
    pub body: String,
}

/// A claimed delivery.
#[derive(Clone, Debug)]
pub struct DueDelivery {
    /// The delivery as stored when claimed.
    pub delivery: WebhookDelivery,
    /// Where it goes; `None` when its endpoint was deleted (it then ends as
    /// [`WebhookDelivery::endpoint_deleted`] says, without an attempt).
    pub target: Option<Target>,
}

/// The dispatcher's and the retention sweep's view of events and deliveries.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait OutboxStore: Send + Sync + 'static {
    /// Claims up to `limit` `PENDING` deliveries due by the store's clock and held by no live
    /// lease, oldest due first, under `lease` for `duration`, taking none of an endpoint that
    /// already has `per_endpoint` held.
    async fn claim_deliveries(
        &self,
        lease: LeaseId,
        duration: Duration,
        limit: usize,
        per_endpoint: usize,
    ) -> Result<Vec<DueDelivery>>;

    /// Writes each delivery as it now stands, if `lease` still holds it, and ends the hold.
    /// Returns how many were written (the others were retried, or their endpoint deleted,
    /// meanwhile).
    async fn finish_deliveries(
        &self,
        lease: LeaseId,
        deliveries: &[WebhookDelivery],
    ) -> Result<usize>;

    /// Deletes up to `limit` events created before `before`, with their deliveries. Returns
    /// how many events were deleted.
    async fn purge_events(&self, before: Timestamp, limit: usize) -> Result<usize>;
}
