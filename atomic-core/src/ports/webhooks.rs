//! [`WebhookStore`]: webhook endpoints and their deliveries as requests see them. A deleted
//! endpoint is gone for every method here (its deliveries stay, for the audit).

use async_trait::async_trait;

use crate::error::Result;
use crate::fresh::Fresh;
use crate::id::{DeliveryId, WebhookEndpointId};
use crate::idempotency::Completion;
use crate::page::{CreatedRange, Page, PageRequest};
use crate::principal::Principal;
use crate::time::Timestamp;
use crate::webhook::{DeliveryStatus, WebhookDelivery, WebhookEndpoint};

/// Which deliveries a list keeps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeliveryFilter {
    /// Only this status.
    pub status: Option<DeliveryStatus>,
    /// Only those created in this range.
    pub created: CreatedRange,
}

/// Endpoints and deliveries. A viewer reaches only endpoints it may see (a merchant its own,
/// the platform every one), and deliveries only through their endpoint.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait WebhookStore: Send + Sync + 'static {
    /// Stores a new endpoint and completes `completion` in the same transaction, unless its
    /// owner already has [`crate::webhook::MAX_ENDPOINTS_PER_OWNER`] endpoints:
    /// [`crate::Error::LimitReached`], however many creations race.
    async fn create_endpoint(
        &self,
        endpoint: &Fresh<WebhookEndpoint>,
        completion: Option<Completion>,
    ) -> Result<()>;

    /// The endpoint, if `viewer` may see it and it is not deleted.
    async fn endpoint(
        &self,
        id: WebhookEndpointId,
        viewer: Principal,
    ) -> Result<Option<WebhookEndpoint>>;

    /// Endpoints `viewer` may see, created in `created`, newest first. A cursor the viewer
    /// cannot see is [`crate::Error::UnknownCursor`].
    async fn endpoints(
        &self,
        viewer: Principal,
        created: CreatedRange,
        page: PageRequest<WebhookEndpointId>,
    ) -> Result<Page<WebhookEndpoint>>;

    /// Deletes the endpoint at `at` and, in the same step, ends its `PENDING` deliveries
    /// ([`WebhookDelivery::endpoint_deleted`]) and any attempt's hold on them. `None` if
    /// there is no such endpoint for this viewer.
    async fn delete_endpoint(
        &self,
        id: WebhookEndpointId,
        viewer: Principal,
        at: Timestamp,
    ) -> Result<Option<WebhookEndpoint>>;

    /// The endpoint's deliveries that pass `filter`, newest first; `None` if there is no such
    /// endpoint for this viewer. A cursor not of this endpoint is
    /// [`crate::Error::UnknownCursor`].
    async fn deliveries(
        &self,
        endpoint: WebhookEndpointId,
        viewer: Principal,
        filter: &DeliveryFilter,
        page: PageRequest<DeliveryId>,
    ) -> Result<Option<Page<WebhookDelivery>>>;

    /// A manual retry ([`WebhookDelivery::retry_now`] at `at`), ending any attempt's hold on
    /// it; the delivery as it now stands, or `None` if there is no such delivery of this
    /// endpoint for this viewer.
    async fn retry_delivery(
        &self,
        endpoint: WebhookEndpointId,
        delivery: DeliveryId,
        viewer: Principal,
        at: Timestamp,
    ) -> Result<Option<WebhookDelivery>>;
}
