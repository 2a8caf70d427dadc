//! Webhook endpoints and their deliveries (API.md *Webhooks*). An endpoint's host is resolved
//! at creation and refused if any address it resolves to is one deliveries may not reach
//! (TEST-MATRIX row 40); its secret is shown only in the answer that made it.

use std::sync::Arc;

use crate::error::{Error, Invalid, Result};
use crate::fresh::Fresh;
use crate::id::{DeliveryId, WebhookEndpointId};
use crate::idempotency::{Completion, IdempotencyKey};
use crate::page::{CreatedRange, Page, PageRequest};
use crate::payment::Description;
use crate::ports::{DeliveryFilter, HostResolver, Ports, WebhookStore};
use crate::principal::Principal;
use crate::service::idempotent::{
    Idempotency, IdempotentWrites, Written, id_response, replayed_id,
};
use crate::time::Clock;
use crate::webhook::{AddressPolicy, Subscription, WebhookDelivery, WebhookEndpoint, WebhookUrl};

/// What a new endpoint is asked for.
#[derive(Clone, Debug)]
pub struct EndpointRequest {
    /// Where deliveries go.
    pub url: WebhookUrl,
    /// Which events.
    pub subscription: Subscription,
    /// The owner's note.
    pub description: Option<Description>,
}

/// An endpoint as creation answers it: with its secret when it was made now, without it in a
/// replay.
#[derive(Clone, Debug)]
pub struct CreatedEndpoint {
    /// The endpoint.
    pub endpoint: WebhookEndpoint,
    /// Whether the secret may be shown (only the call that made it).
    pub reveal_secret: bool,
}

/// Webhook endpoints and deliveries.
#[derive(Clone)]
pub struct WebhookService {
    store: Arc<dyn WebhookStore>,
    resolver: Arc<dyn HostResolver>,
    policy: AddressPolicy,
    clock: Arc<dyn Clock>,
    writes: IdempotentWrites,
}

impl WebhookService {
    pub(super) fn new(ports: &Ports, policy: AddressPolicy, writes: IdempotentWrites) -> Self {
        Self {
            store: ports.store.webhooks().clone(),
            resolver: ports.resolver.clone(),
            policy,
            clock: ports.clock.clone(),
            writes,
        }
    }

    /// Checks the URL's host and builds the caller's new endpoint; writes nothing. A host that
    /// does not resolve, or resolves to any address the policy refuses, is a validation error
    /// on `url`.
    pub async fn prepare(
        &self,
        caller: Principal,
        request: EndpointRequest,
    ) -> Result<Fresh<WebhookEndpoint>> {
        let addresses = self
            .resolver
            .resolve(&request.url)
            .await
            .map_err(|_| Error::invalid_field("url", Invalid::new("host does not resolve")))?;
        for ip in addresses {
            if let Err(range) = self.policy.admits(ip) {
                let why = format!("host resolves to a {range} address, which is refused");
                return Err(Error::invalid_field("url", Invalid::owned(why)));
            }
        }
        WebhookEndpoint::new(
            caller.as_owner(),
            request.url,
            request.subscription,
            request.description,
            self.clock.now(),
        )
    }

    /// Stores a prepared endpoint (and its idempotency completion) in one transaction; an
    /// owner with 16 endpoints already is [`Error::LimitReached`].
    pub async fn submit(
        &self,
        endpoint: &Fresh<WebhookEndpoint>,
        completion: Option<Completion>,
    ) -> Result<()> {
        self.store.create_endpoint(endpoint, completion).await
    }

    /// Makes an endpoint: prepares and submits it in one call, idempotent under `key` (a
    /// replay answers the endpoint without its secret).
    pub async fn create(
        &self,
        caller: Principal,
        request: EndpointRequest,
        key: Option<IdempotencyKey>,
    ) -> Result<CreatedEndpoint> {
        let events = request.subscription.names().join(",");
        let description = request.description.as_ref().map_or("", |d| d.as_str());
        let fields: [&[u8]; 3] = [
            request.url.as_str().as_bytes(),
            events.as_bytes(),
            description.as_bytes(),
        ];
        let idempotency = Idempotency::keyed(key, "webhook_endpoint", &fields);
        let written = self
            .writes
            .run(
                caller,
                idempotency.as_ref(),
                |_| self.prepare(caller, request),
                |endpoint| id_response(endpoint.id.as_uuid()),
                || {},
                |endpoint, completion| {
                    let service = self.clone();
                    async move {
                        service.submit(&endpoint, completion).await?;
                        Ok(endpoint.into_inner())
                    }
                },
            )
            .await?;
        match written {
            Written::New(endpoint) => Ok(CreatedEndpoint {
                endpoint,
                reveal_secret: true,
            }),
            Written::Replayed(stored) => {
                let id = WebhookEndpointId::from_uuid(replayed_id(&stored)?);
                Ok(CreatedEndpoint {
                    endpoint: self.get(caller, id).await?,
                    reveal_secret: false,
                })
            }
        }
    }

    /// The endpoint, if the caller may see it and it is not deleted.
    pub async fn get(&self, caller: Principal, id: WebhookEndpointId) -> Result<WebhookEndpoint> {
        self.store
            .endpoint(id, caller)
            .await?
            .ok_or(Error::NotFound)
    }

    /// Endpoints the caller may see, created in `created`, newest first.
    pub async fn list(
        &self,
        caller: Principal,
        created: CreatedRange,
        page: PageRequest<WebhookEndpointId>,
    ) -> Result<Page<WebhookEndpoint>> {
        self.store.endpoints(caller, created, page).await
    }

    /// Deletes the endpoint: nothing is sent to it afterwards, and its pending deliveries end
    /// `FAILED` (`endpoint_deleted`).
    pub async fn delete(
        &self,
        caller: Principal,
        id: WebhookEndpointId,
    ) -> Result<WebhookEndpoint> {
        let endpoint = self
            .store
            .delete_endpoint(id, caller, self.clock.now())
            .await?
            .ok_or(Error::NotFound)?;
        tracing::info!(webhook_endpoint_id = %endpoint.id, "webhook endpoint deleted");
        Ok(endpoint)
    }

    /// The endpoint's deliveries that pass `filter`, newest first.
    pub async fn deliveries(
        &self,
        caller: Principal,
        endpoint: WebhookEndpointId,
        filter: &DeliveryFilter,
        page: PageRequest<DeliveryId>,
    ) -> Result<Page<WebhookDelivery>> {
        self.store
            .deliveries(endpoint, caller, filter, page)
            .await?
            .ok_or(Error::NotFound)
    }

    /// Asks for one more attempt of a delivery now, whatever its status.
    pub async fn retry(
        &self,
        caller: Principal,
        endpoint: WebhookEndpointId,
        delivery: DeliveryId,
    ) -> Result<WebhookDelivery> {
        self.store
            .retry_delivery(endpoint, delivery, caller, self.clock.now())
            .await?
            .ok_or(Error::NotFound)
    }
}
