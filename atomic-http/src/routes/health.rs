//! `GET /health` (liveness: the process answers) and `GET /health/ready` (each dependency
//! answers). Neither needs a key nor is rate limited. Readiness answers within a second
//! whatever a dependency does: one that has not answered by then is `down`.

use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::RequestMeta;
use super::shapes::{Liveness, NotReady, Readiness};
use crate::AppState;
use crate::envelope::json_response;
use crate::openapi::Success;

/// How long readiness waits for each dependency (they are asked at once), so that the whole
/// answer, rendering included, comes within a second.
const READY_WITHIN: Duration = Duration::from_millis(750);

#[utoipa::path(
    get, path = "/api/v1/health", tag = "operations", operation_id = "getHealth",
    responses((status = 200, description = "The process answers", body = Success<Liveness>))
)]
pub(crate) async fn live(State(app): State<AppState>, meta: RequestMeta) -> Response {
    meta.ok(&app, &json!({ "status": "healthy" }))
}

#[utoipa::path(
    get, path = "/api/v1/health/ready", tag = "operations", operation_id = "getReadiness",
    responses((status = 200, description = "Every dependency answers", body = Success<Readiness>),
              (status = 503, description = "A dependency is down (`success: false`, `data` as for 200)", body = NotReady))
)]
pub(crate) async fn ready(State(app): State<AppState>, meta: RequestMeta) -> Response {
    let readiness = app.services().readiness(READY_WITHIN).await;
    let state = |up: bool| if up { "up" } else { "down" };
    let data = json!({
        "status": if readiness.all_up() { "ready" } else { "unavailable" },
        "checks": {
            "store": state(readiness.store),
            "queue": state(readiness.queue),
            "limiter": state(readiness.limiter),
        },
        "limiterFailOpen": app.limiter_failures(),
    });
    if readiness.all_up() {
        return meta.ok(&app, &data);
    }
    // Not ready is still a health answer: `data` (its `status` and checks) as for every health
    // answer, with `success: false`, and no `error` beside it.
    #[derive(serde::Serialize)]
    struct NotReady<'a> {
        success: bool,
        data: &'a serde_json::Value,
        meta: crate::envelope::Meta,
    }
    let body = NotReady {
        success: false,
        data: &data,
        meta: meta.meta(&app),
    };
    let mut response = json_response(
        StatusCode::SERVICE_UNAVAILABLE,
        serde_json::to_vec(&body).unwrap_or_default().into(),
    );
    response.headers_mut().insert(
        header::RETRY_AFTER,
        crate::error::RETRY_AFTER_UNAVAILABLE.into(),
    );
    response.extensions_mut().insert(crate::envelope::Rendered);
    response.into_response()
}
