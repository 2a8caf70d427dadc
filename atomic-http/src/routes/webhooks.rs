//! Webhook endpoints: `POST /webhook-endpoints` (201; the signing secret appears in this
//! answer and never again, not even in its replay), `GET /webhook-endpoints`,
//! `GET /webhook-endpoints/:id`, `DELETE /webhook-endpoints/:id` (200 with the endpoint; every
//! route of it is 404 afterwards), and its deliveries: `GET …/:id/deliveries` and
//! `POST …/:id/deliveries/:deliveryId/retry` (202, one more attempt now). The gate looks the
//! key up afresh for every one of these routes.

use atomic_core::Invalid;
use atomic_core::id::{DeliveryId, WebhookEndpointId};
use atomic_core::payment::Description;
use atomic_core::service::EndpointRequest;
use atomic_core::webhook::{Subscription, WebhookUrl};
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;

use super::shapes::{DeliveryListParams, EmptyBody, EndpointCreate};
use super::{RequestMeta, path_id};
use crate::AppState;
use crate::body::JsonBody;
use crate::error::ApiError;
use crate::fields::{Fields, string};
use crate::gate::Caller;
use crate::idempotency::IdempotencyHeader;
use crate::openapi::{PageParams, Success};
use crate::query::{self, List};
use crate::views::{DeliveryView, EndpointView, ListView};

/// `POST /webhook-endpoints` with `{"url", "events", "description"?}`.
#[utoipa::path(
    post, path = "/api/v1/webhook-endpoints", tag = "webhooks", operation_id = "createWebhookEndpoint",
    request_body = EndpointCreate,
    responses((status = 201, description = "The endpoint (its secret only here)", body = Success<EndpointView>))
)]
pub(crate) async fn create(
    State(app): State<AppState>,
    Caller(caller): Caller,
    meta: RequestMeta,
    idempotency: IdempotencyHeader,
    body: JsonBody,
) -> Result<Response, ApiError> {
    let request = endpoint_request(&body)?;
    let services = app.services();
    meta.create(&app, caller, &idempotency, &body, StatusCode::CREATED)?
        .run(
            |_claim| async move { services.webhooks.prepare(caller, request).await },
            |endpoint, reveal| EndpointView::created(endpoint, reveal),
            |endpoint, completion| {
                let webhooks = services.webhooks.clone();
                async move { webhooks.submit(&endpoint, completion).await }
            },
        )
        .await
}

/// The body of `POST /webhook-endpoints`, every field checked (the host is resolved later,
/// by the service).
fn endpoint_request(body: &JsonBody) -> Result<EndpointRequest, ApiError> {
    let mut f = Fields::new(&body.object, &["url", "events", "description"]);
    let url = f.required("url", |v| WebhookUrl::parse(string(v)?));
    let subscription = f.required("events", events);
    let description = f.optional("description", |v| Description::parse(string(v)?));
    f.finish()?;
    let (Some(url), Some(subscription), Some(description)) = (url, subscription, description)
    else {
        return Err(ApiError::Validation(Vec::new()));
    };
    Ok(EndpointRequest {
        url,
        subscription,
        description,
    })
}

/// `events`: a list of event type names, or `["*"]`.
fn events(value: &Value) -> Result<Subscription, Invalid> {
    let Value::Array(items) = value else {
        return Err(Invalid::new("must be a list of event types, or [\"*\"]"));
    };
    let names = items
        .iter()
        .map(|item| {
            item.as_str()
                .ok_or(Invalid::new("must list event types as strings"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Subscription::parse(&names)
}

/// `GET /webhook-endpoints/:id` (no secret).
#[utoipa::path(
    get, path = "/api/v1/webhook-endpoints/{id}", tag = "webhooks", operation_id = "getWebhookEndpoint",
    params(("id" = String, Path, format = "uuid", description = "The endpoint's id")),
    responses((status = 200, description = "The endpoint (no secret)", body = Success<EndpointView>))
)]
pub(crate) async fn show(
    State(app): State<AppState>,
    Caller(caller): Caller,
    meta: RequestMeta,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let endpoint = app
        .services()
        .webhooks
        .get(caller, path_id::<WebhookEndpointId>(&id)?)
        .await?;
    Ok(meta.ok(&app, &EndpointView::stored(&endpoint)))
}

/// `GET /webhook-endpoints`: the created range and the page, newest first.
#[utoipa::path(
    get, path = "/api/v1/webhook-endpoints", tag = "webhooks", operation_id = "listWebhookEndpoints",
    params(PageParams),
    responses((status = 200, description = "Endpoints, newest first", body = Success<ListView<EndpointView>>))
)]
pub(crate) async fn list(
    State(app): State<AppState>,
    Caller(caller): Caller,
    meta: RequestMeta,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = query::parse(raw.as_deref(), List::WebhookEndpoints)?;
    let page = app
        .services()
        .webhooks
        .list(caller, q.created, q.page::<WebhookEndpointId>())
        .await?;
    Ok(meta.ok(&app, &ListView::of(&page, EndpointView::stored)))
}

/// `DELETE /webhook-endpoints/:id`: 200 with the endpoint as it was (no secret).
#[utoipa::path(
    delete, path = "/api/v1/webhook-endpoints/{id}", tag = "webhooks", operation_id = "deleteWebhookEndpoint",
    params(("id" = String, Path, format = "uuid", description = "The endpoint's id")),
    responses((status = 200, description = "The endpoint as it was; its pending deliveries end `FAILED`", body = Success<EndpointView>))
)]
pub(crate) async fn delete(
    State(app): State<AppState>,
    Caller(caller): Caller,
    meta: RequestMeta,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let endpoint = app
        .services()
        .webhooks
        .delete(caller, path_id::<WebhookEndpointId>(&id)?)
        .await?;
    Ok(meta.ok(&app, &EndpointView::stored(&endpoint)))
}

/// `GET /webhook-endpoints/:id/deliveries`: `?status=`, the created range and the page.
#[utoipa::path(
    get, path = "/api/v1/webhook-endpoints/{id}/deliveries", tag = "webhooks", operation_id = "listDeliveries",
    params(("id" = String, Path, format = "uuid", description = "The endpoint's id"), PageParams, DeliveryListParams),
    responses((status = 200, description = "The endpoint's deliveries, newest first", body = Success<ListView<DeliveryView>>))
)]
pub(crate) async fn deliveries(
    State(app): State<AppState>,
    Caller(caller): Caller,
    meta: RequestMeta,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let id = path_id::<WebhookEndpointId>(&id)?;
    let q = query::parse(raw.as_deref(), List::Deliveries)?;
    let page = app
        .services()
        .webhooks
        .deliveries(caller, id, &q.delivery_filter(), q.page::<DeliveryId>())
        .await?;
    Ok(meta.ok(&app, &ListView::of(&page, DeliveryView::new)))
}

/// `POST /webhook-endpoints/:id/deliveries/:deliveryId/retry` with `{}` (or no body): 202
/// with the delivery, now `PENDING`, its attempt due at once.
#[utoipa::path(
    post, path = "/api/v1/webhook-endpoints/{id}/deliveries/{deliveryId}/retry", tag = "webhooks", operation_id = "retryDelivery",
    params(("id" = String, Path, format = "uuid", description = "The endpoint's id"), ("deliveryId" = String, Path, format = "uuid", description = "The delivery's id")),
    request_body(content = Option<EmptyBody>, description = "`{}` or no body"),
    responses((status = 202, description = "The delivery, now `PENDING`: one attempt now", body = Success<DeliveryView>))
)]
pub(crate) async fn retry(
    State(app): State<AppState>,
    Caller(caller): Caller,
    meta: RequestMeta,
    Path((id, delivery)): Path<(String, String)>,
    body: JsonBody,
) -> Result<Response, ApiError> {
    let id = path_id::<WebhookEndpointId>(&id)?;
    let delivery = delivery
        .parse::<DeliveryId>()
        .map_err(|e| ApiError::field("deliveryId", e))?;
    Fields::new(&body.object, &[]).finish()?;
    let delivery = app.services().webhooks.retry(caller, id, delivery).await?;
    Ok(meta.answer(&app, StatusCode::ACCEPTED, &DeliveryView::new(&delivery)))
}
