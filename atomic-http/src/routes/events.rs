//! `GET /events` (`?type=` plus the list parameters) and `GET /events/:id`: a merchant key
//! sees its merchant's events, the platform key every one. An event is answered as the exact
//! JSON it was written as, so a read and every webhook delivery of it say the same.

use atomic_core::id::EventId;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;

use super::shapes::EventListParams;
use super::{RequestMeta, path_id};
use crate::AppState;
use crate::error::ApiError;
use crate::gate::Caller;
use crate::openapi::{PageParams, Success};
use crate::query::{self, List};
use crate::views::EventDoc;
use crate::views::{ListView, event_view};

/// `GET /events/:id`: the event itself as `data`.
#[utoipa::path(
    get, path = "/api/v1/events/{id}", tag = "events", operation_id = "getEvent",
    params(("id" = String, Path, format = "uuid", description = "The event's id")),
    responses((status = 200, description = "The event", body = Success<EventDoc>))
)]
pub(crate) async fn show(
    State(app): State<AppState>,
    Caller(caller): Caller,
    meta: RequestMeta,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let event = app
        .services()
        .events
        .get(caller, path_id::<EventId>(&id)?)
        .await?;
    Ok(meta.ok(&app, &event_view(&event)?))
}

/// `GET /events`: `?type=`, the created range and the page, newest first.
#[utoipa::path(
    get, path = "/api/v1/events", tag = "events", operation_id = "listEvents",
    params(PageParams, EventListParams),
    responses((status = 200, description = "Events, newest first", body = Success<ListView<EventDoc>>))
)]
pub(crate) async fn list(
    State(app): State<AppState>,
    Caller(caller): Caller,
    meta: RequestMeta,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = query::parse(raw.as_deref(), List::Events)?;
    let page = app
        .services()
        .events
        .list(caller, &q.event_filter(), q.page())
        .await?;
    let data = ListView::try_of(&page, event_view)?;
    Ok(meta.ok(&app, &data))
}
