//! `POST /accounts` (201), `GET /accounts/:id`, `GET /accounts/:id/entries`.

use atomic_core::{AccountId, EntryId};
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::shapes::NameAndCurrency;
use super::{RequestMeta, name_and_currency, path_id};
use crate::AppState;
use crate::body::JsonBody;
use crate::error::ApiError;
use crate::gate::Caller;
use crate::idempotency::IdempotencyHeader;
use crate::openapi::{PageParams, Success};
use crate::query::{self, List};
use crate::views::{AccountView, EntryView, ListView};

#[utoipa::path(
    post, path = "/api/v1/accounts", tag = "accounts", operation_id = "createAccount",
    request_body = NameAndCurrency,
    responses((status = 201, description = "The account, empty", body = Success<AccountView>))
)]
pub(crate) async fn create(
    State(app): State<AppState>,
    Caller(caller): Caller,
    meta: RequestMeta,
    idempotency: IdempotencyHeader,
    body: JsonBody,
) -> Result<Response, ApiError> {
    let (name, currency) = name_and_currency(&app, &body)?;
    let services = app.services();
    meta.create(&app, caller, &idempotency, &body, StatusCode::CREATED)?
        .run(
            |_claim| async { Ok(services.accounts.prepare(caller, name, currency)) },
            |account, _| AccountView::new(account),
            |account, completion| {
                let accounts = services.accounts.clone();
                async move { accounts.submit(&account, completion).await }
            },
        )
        .await
}

#[utoipa::path(
    get, path = "/api/v1/accounts/{id}", tag = "accounts", operation_id = "getAccount",
    params(("id" = String, Path, format = "uuid", description = "The account's id")),
    responses((status = 200, description = "The account", body = Success<AccountView>))
)]
pub(crate) async fn show(
    State(app): State<AppState>,
    Caller(caller): Caller,
    meta: RequestMeta,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let account = app
        .services()
        .accounts
        .get(caller, path_id::<AccountId>(&id)?)
        .await?;
    Ok(meta.ok(&app, &AccountView::new(&account)))
}

#[utoipa::path(
    get, path = "/api/v1/accounts/{id}/entries", tag = "accounts", operation_id = "listEntries",
    params(("id" = String, Path, format = "uuid", description = "The account's id"), PageParams),
    responses((status = 200, description = "The account's ledger entries, newest first", body = Success<ListView<EntryView>>))
)]
pub(crate) async fn entries(
    State(app): State<AppState>,
    Caller(caller): Caller,
    meta: RequestMeta,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let id = path_id::<AccountId>(&id)?;
    let q = query::parse(raw.as_deref(), List::Entries)?;
    let page = app
        .services()
        .accounts
        .entries(caller, id, q.created, q.page::<EntryId>())
        .await?;
    let data = ListView::of(&page, EntryView::new);
    Ok(meta.ok(&app, &data))
}
