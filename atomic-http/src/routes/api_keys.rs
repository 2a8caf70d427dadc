//! `POST /api-keys` (a merchant key mints another for its merchant; the secret is shown once),
//! `GET /api-keys`, `DELETE /api-keys/:id` (revocation holds from the next request on).

use atomic_core::ApiKeyId;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::shapes::EmptyBody;
use super::{RequestMeta, path_id};
use crate::AppState;
use crate::body::JsonBody;
use crate::error::ApiError;
use crate::fields::Fields;
use crate::gate::Caller;
use crate::idempotency::IdempotencyHeader;
use crate::openapi::{PageParams, Success};
use crate::query::{self, List};
use crate::views::{ApiKeyView, ListView};

#[utoipa::path(
    post, path = "/api/v1/api-keys", tag = "api-keys", operation_id = "createApiKey",
    request_body(content = Option<EmptyBody>, description = "`{}` or no body"),
    responses((status = 201, description = "A new key for the caller's merchant (the raw key only here)", body = Success<ApiKeyView>))
)]
pub(crate) async fn create(
    State(app): State<AppState>,
    Caller(caller): Caller,
    meta: RequestMeta,
    idempotency: IdempotencyHeader,
    body: JsonBody,
) -> Result<Response, ApiError> {
    Fields::new(&body.object, &[]).finish()?;
    let services = app.services();
    meta.create(&app, caller, &idempotency, &body, StatusCode::CREATED)?
        .run(
            |_claim| async { services.api_keys.prepare(caller) },
            |(key, raw), reveal| ApiKeyView::minted(key, raw, reveal),
            |(key, _raw), completion| {
                let api_keys = services.api_keys.clone();
                async move { api_keys.submit(&key, completion).await }
            },
        )
        .await
}

#[utoipa::path(
    get, path = "/api/v1/api-keys", tag = "api-keys", operation_id = "listApiKeys",
    params(PageParams),
    responses((status = 200, description = "Keys, newest first (never a hash or a raw key)", body = Success<ListView<ApiKeyView>>))
)]
pub(crate) async fn list(
    State(app): State<AppState>,
    Caller(caller): Caller,
    meta: RequestMeta,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = query::parse(raw.as_deref(), List::ApiKeys)?;
    let page = app
        .services()
        .api_keys
        .list(caller, q.created, q.page::<ApiKeyId>())
        .await?;
    let data = ListView::of(&page, ApiKeyView::stored);
    Ok(meta.ok(&app, &data))
}

#[utoipa::path(
    delete, path = "/api/v1/api-keys/{id}", tag = "api-keys", operation_id = "revokeApiKey",
    params(("id" = String, Path, format = "uuid", description = "The key's id")),
    responses((status = 200, description = "The key, revoked: it fails with 401 from the next request on", body = Success<ApiKeyView>))
)]
pub(crate) async fn revoke(
    State(app): State<AppState>,
    Caller(caller): Caller,
    meta: RequestMeta,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let key = app
        .services()
        .api_keys
        .revoke(caller, path_id::<ApiKeyId>(&id)?)
        .await?;
    Ok(meta.ok(&app, &ApiKeyView::stored(&key)))
}
