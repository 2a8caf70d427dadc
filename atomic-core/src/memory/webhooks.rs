//! [`WebhookStore`] in memory: endpoints (a deleted one is kept, marked, for its deliveries)
//! and their deliveries.

use async_trait::async_trait;

use super::store::{MemoryStore, State, page_of};
use crate::error::{Error, Result};
use crate::fresh::Fresh;
use crate::id::{DeliveryId, WebhookEndpointId};
use crate::idempotency::Completion;
use crate::page::{CreatedRange, Page, PageRequest};
use crate::ports::{DeliveryFilter, WebhookStore};
use crate::principal::Principal;
use crate::time::Timestamp;
use crate::webhook::{MAX_ENDPOINTS_PER_OWNER, WebhookDelivery, WebhookEndpoint};

use super::store::EndpointRow;

impl State {
    /// The live endpoint `id`, if `viewer` may see it.
    fn live_endpoint(&self, id: WebhookEndpointId, viewer: Principal) -> Option<&EndpointRow> {
        self.endpoints
            .get(&id)
            .filter(|row| row.deleted.is_none() && viewer.can_access(row.endpoint.owner))
    }
}

#[async_trait]
impl WebhookStore for MemoryStore {
    async fn create_endpoint(
        &self,
        endpoint: &Fresh<WebhookEndpoint>,
        completion: Option<Completion>,
    ) -> Result<()> {
        let mut state = self.lock();
        let owned = state
            .endpoints
            .values()
            .filter(|row| row.deleted.is_none() && row.endpoint.owner == endpoint.owner)
            .count();
        if owned >= MAX_ENDPOINTS_PER_OWNER {
            return Err(Error::LimitReached);
        }
        if state.endpoints.contains_key(&endpoint.id) {
            return Err(crate::error::Invariant::DuplicateId.into());
        }
        state.check_completion(completion.as_ref(), self.now())?;
        let row = EndpointRow {
            endpoint: WebhookEndpoint::clone(endpoint),
            deleted: None,
        };
        state.endpoints.insert(endpoint.id, row);
        state.apply_completion(completion, self.now());
        Ok(())
    }

    async fn endpoint(
        &self,
        id: WebhookEndpointId,
        viewer: Principal,
    ) -> Result<Option<WebhookEndpoint>> {
        let state = self.lock();
        Ok(state
            .live_endpoint(id, viewer)
            .map(|row| row.endpoint.clone()))
    }

    async fn endpoints(
        &self,
        viewer: Principal,
        created: CreatedRange,
        page: PageRequest<WebhookEndpointId>,
    ) -> Result<Page<WebhookEndpoint>> {
        let state = self.lock();
        let page = page_of(
            &state.endpoints,
            page,
            |row| row.deleted.is_none() && viewer.can_access(row.endpoint.owner),
            |row| created.contains(row.endpoint.created_at),
        )?;
        Ok(page.map(|row| row.endpoint))
    }

    async fn delete_endpoint(
        &self,
        id: WebhookEndpointId,
        viewer: Principal,
        at: Timestamp,
    ) -> Result<Option<WebhookEndpoint>> {
        let mut state = self.lock();
        let Some(endpoint) = state
            .live_endpoint(id, viewer)
            .map(|row| row.endpoint.clone())
        else {
            return Ok(None);
        };
        for row in state.deliveries.values_mut() {
            if row.delivery.endpoint_id == id {
                row.delivery.endpoint_deleted();
                row.lease = None;
            }
        }
        if let Some(row) = state.endpoints.get_mut(&id) {
            row.deleted = Some(at);
        }
        Ok(Some(endpoint))
    }

    async fn deliveries(
        &self,
        endpoint: WebhookEndpointId,
        viewer: Principal,
        filter: &DeliveryFilter,
        page: PageRequest<DeliveryId>,
    ) -> Result<Option<Page<WebhookDelivery>>> {
        let state = self.lock();
        if state.live_endpoint(endpoint, viewer).is_none() {
            return Ok(None);
        }
        let page = page_of(
            &state.deliveries,
            page,
            |row| row.delivery.endpoint_id == endpoint,
            |row| {
                filter.status.is_none_or(|s| s == row.delivery.status)
                    && filter.created.contains(row.delivery.created_at)
            },
        )?;
        Ok(Some(page.map(|row| row.delivery)))
    }

    async fn retry_delivery(
        &self,
        endpoint: WebhookEndpointId,
        delivery: DeliveryId,
        viewer: Principal,
        at: Timestamp,
    ) -> Result<Option<WebhookDelivery>> {
        let mut state = self.lock();
        if state.live_endpoint(endpoint, viewer).is_none() {
            return Ok(None);
        }
        let Some(row) = state
            .deliveries
            .get_mut(&delivery)
            .filter(|row| row.delivery.endpoint_id == endpoint)
        else {
            return Ok(None);
        };
        row.delivery.retry_now(at);
        row.lease = None;
        Ok(Some(row.delivery.clone()))
    }
}
