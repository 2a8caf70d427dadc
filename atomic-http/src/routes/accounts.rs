//! `POST /accounts` (201), `GET /accounts/:id`, `GET /accounts/:id/entries`.

use atomic_core::account::AccountName;
use atomic_core::{AccountId, EntryId};
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::{RequestMeta, path_id};
use crate::AppState;
use crate::body::JsonBody;
use crate::envelope::{json_response, success_body};
use crate::error::ApiError;
use crate::fields::{Fields, string};
use crate::gate::Caller;
use crate::idempotency::{Create, IdempotencyHeader};
use crate::query;
use crate::views::{AccountView, EntryView, ListView};

pub(crate) async fn create(
    State(app): State<AppState>,
    Caller(caller): Caller,
    meta: RequestMeta,
    idempotency: IdempotencyHeader,
    body: JsonBody,
) -> Result<Response, ApiError> {
    let services = app.services();
    let currencies = &services.config().currencies;
    let mut f = Fields::new(&body.object, &["name", "currency"]);
    let name = f.required("name", |v| AccountName::parse(string(v)?));
    let currency = f.required("currency", |v| currencies.parse(string(v)?));
    f.finish()?;
    let (Some(name), Some(currency)) = (name, currency) else {
        return Err(ApiError::Validation(Vec::new()));
    };
    Create {
        services,
        caller,
        key: idempotency.key()?,
        fingerprint: meta.fingerprint(&body.canonical),
        status: StatusCode::CREATED,
        meta: meta.meta(&app),
    }
    .run(
        async { Ok(services.accounts.prepare(caller, name, currency)) },
        AccountView::new,
        |account, completion| async move { services.accounts.submit(&account, completion).await },
    )
    .await
}

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
    Ok(json_response(
        StatusCode::OK,
        success_body(&AccountView::new(&account), &meta.meta(&app)),
    ))
}

pub(crate) async fn entries(
    State(app): State<AppState>,
    Caller(caller): Caller,
    meta: RequestMeta,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let id = path_id::<AccountId>(&id)?;
    let q = query::parse(raw.as_deref(), false)?;
    let page = app
        .services()
        .accounts
        .entries(caller, id, q.page::<EntryId>())
        .await?;
    let data = ListView::of(&page, EntryView::new);
    Ok(json_response(
        StatusCode::OK,
        success_body(&data, &meta.meta(&app)),
    ))
}
