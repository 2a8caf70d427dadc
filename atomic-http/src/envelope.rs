//! The response envelope: `{"success", "data" | "error", "meta": {"timestamp", "requestId"}}`.
//! Success bodies are rendered by handlers (so an idempotent response can be stored byte for
//! byte); error bodies by [`render_errors`], the middleware that turns every error response,
//! ours or a framework's (405, timeout), into the same JSON shape.

use atomic_core::Timestamp;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Serialize;

use crate::AppState;
use crate::error::{ApiError, ErrorParts};
use crate::request_id::RequestId;

/// The `meta` object of every response.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Meta {
    /// When the answer was made.
    #[schema(format = DateTime)]
    timestamp: String,
    /// The `X-Request-Id` of the request.
    request_id: String,
}

impl Meta {
    pub(crate) fn new(now: Timestamp, request_id: &RequestId) -> Self {
        Self {
            timestamp: now.to_string(),
            request_id: request_id.as_str().to_owned(),
        }
    }
}

/// Renders a success body.
pub(crate) fn success_body(data: &impl Serialize, meta: &Meta) -> Bytes {
    #[derive(Serialize)]
    struct Envelope<'a, T> {
        success: bool,
        data: &'a T,
        meta: &'a Meta,
    }
    let envelope = Envelope {
        success: true,
        data,
        meta,
    };
    // Serializing plain data structs into a Vec cannot fail.
    Bytes::from(serde_json::to_vec(&envelope).unwrap_or_default())
}

/// A JSON response with these exact body bytes.
pub(crate) fn json_response(status: StatusCode, body: Bytes) -> Response {
    let mut response = (status, Body::from(body)).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn error_body(parts: &ErrorParts, meta: &Meta) -> Bytes {
    #[derive(Serialize)]
    struct Detail<'a> {
        field: &'a str,
        message: &'a str,
    }
    #[derive(Serialize)]
    struct ErrorObject<'a> {
        code: &'a str,
        message: &'a str,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        details: Vec<Detail<'a>>,
    }
    #[derive(Serialize)]
    struct Envelope<'a> {
        success: bool,
        error: ErrorObject<'a>,
        meta: &'a Meta,
    }
    let envelope = Envelope {
        success: false,
        error: ErrorObject {
            code: parts.code,
            message: &parts.message,
            details: parts
                .details
                .iter()
                .map(|d| Detail {
                    field: &d.field,
                    message: &d.message,
                })
                .collect(),
        },
        meta,
    };
    Bytes::from(serde_json::to_vec(&envelope).unwrap_or_default())
}

/// The parts of an error response that carries none of ours (axum's 405, a timeout, ...).
fn parts_for_status(status: StatusCode) -> ErrorParts {
    match status {
        StatusCode::NOT_FOUND => ApiError::NotFound,
        StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed,
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType,
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::REQUEST_TIMEOUT => ApiError::Unavailable,
        s if s.is_client_error() => ApiError::Validation(Vec::new()),
        _ => {
            tracing::error!(%status, "an error response from outside the handlers");
            ApiError::Internal(atomic_core::Error::backend(format!(
                "unexpected status {status}"
            )))
        }
    }
    .into_parts()
}

/// Marks an error response whose body is already a full envelope (the readiness report), so
/// [`render_errors`] leaves it as it is.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rendered;

/// Middleware: renders every error response as the JSON error envelope.
pub(crate) async fn render_errors(
    State(app): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .cloned()
        .unwrap_or_else(RequestId::generate);
    let response = next.run(request).await;
    if response.extensions().get::<Rendered>().is_some() {
        return response;
    }
    let status = response.status();
    let ours = response.extensions().get::<ErrorParts>().cloned();
    let parts = match ours {
        Some(parts) => parts,
        None if status.is_client_error() || status.is_server_error() => parts_for_status(status),
        None => return response,
    };
    let meta = Meta::new(app.now(), &request_id);
    let (mut head, _) = response.into_parts();
    head.extensions.remove::<ErrorParts>();
    head.headers.remove(header::CONTENT_LENGTH);
    head.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if status == StatusCode::SERVICE_UNAVAILABLE && !head.headers.contains_key(header::RETRY_AFTER)
    {
        head.headers.insert(
            header::RETRY_AFTER,
            crate::error::RETRY_AFTER_UNAVAILABLE.into(),
        );
    }
    Response::from_parts(head, Body::from(error_body(&parts, &meta)))
}
