//! `POST /payments/:id/refunds` (202, the refund stored `PENDING` with its amount reserved on
//! the payment; a worker posts it), `GET /refunds/:id`, `GET /refunds`.

use atomic_core::refund::RefundReason;
use atomic_core::{Amount, PaymentId, RefundId, RefundRequest};
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::{RequestMeta, path_id};
use crate::AppState;
use crate::body::JsonBody;
use crate::error::ApiError;
use crate::fields::{Fields, integer, metadata, string};
use crate::gate::Caller;
use crate::idempotency::IdempotencyHeader;
use crate::query::{self, List};
use atomic_core::event::RefundView;

use super::shapes::{RefundCreate, RefundListParams};
use crate::openapi::{MetadataParams, PageParams, Success};
use crate::views::ListView;

/// `POST /payments/:id/refunds` with `{"amount"?, "reason"?, "metadata"?}`; the amount
/// defaults to all that is still refundable.
#[utoipa::path(
    post, path = "/api/v1/payments/{id}/refunds", tag = "refunds", operation_id = "createRefund",
    params(("id" = String, Path, format = "uuid", description = "The payment's id")),
    request_body(content = Option<RefundCreate>, description = "The refund (all that is still refundable by default)"),
    responses((status = 202, description = "Stored `PENDING`, its amount reserved; a worker posts it", body = Success<RefundView>))
)]
pub(crate) async fn create(
    State(app): State<AppState>,
    Caller(caller): Caller,
    meta: RequestMeta,
    Path(id): Path<String>,
    idempotency: IdempotencyHeader,
    body: JsonBody,
) -> Result<Response, ApiError> {
    let payment_id = path_id::<PaymentId>(&id)?;
    let request = refund_request(&body)?;
    let services = app.services();
    meta.create(&app, caller, &idempotency, &body, StatusCode::ACCEPTED)?
        .run(
            |claim| async move {
                services
                    .refunds
                    .prepare(caller, payment_id, request, claim.as_ref())
                    .await
            },
            |refund, _| RefundView::new(refund),
            |refund, completion| {
                let refunds = services.refunds.clone();
                async move { refunds.submit(&refund, completion).await }
            },
        )
        .await
}

/// The body of a refund request, every field checked.
fn refund_request(body: &JsonBody) -> Result<RefundRequest, ApiError> {
    let mut f = Fields::new(&body.object, &["amount", "reason", "metadata"]);
    let amount = f.optional("amount", |v| Amount::for_payment(integer(v)?));
    let reason = f.optional("reason", |v| RefundReason::parse(string(v)?));
    let metadata = f.optional_not_null("metadata", metadata);
    f.finish()?;
    let (Some(amount), Some(reason), Some(metadata)) = (amount, reason, metadata) else {
        return Err(ApiError::Validation(Vec::new()));
    };
    Ok(RefundRequest {
        amount,
        reason,
        metadata: metadata.unwrap_or_default(),
    })
}

/// `GET /refunds/:id`: the refund itself as `data`.
#[utoipa::path(
    get, path = "/api/v1/refunds/{id}", tag = "refunds", operation_id = "getRefund",
    params(("id" = String, Path, format = "uuid", description = "The refund's id")),
    responses((status = 200, description = "The refund", body = Success<RefundView>))
)]
pub(crate) async fn show(
    State(app): State<AppState>,
    Caller(caller): Caller,
    meta: RequestMeta,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let refund = app
        .services()
        .refunds
        .get(caller, path_id::<RefundId>(&id)?)
        .await?;
    Ok(meta.ok(&app, &RefundView::new(&refund)))
}

/// `GET /refunds`: `?paymentId=&status=`, the created range, metadata filters and the page.
/// A `paymentId` the caller cannot see gives an empty list, as an unknown one does.
#[utoipa::path(
    get, path = "/api/v1/refunds", tag = "refunds", operation_id = "listRefunds",
    params(PageParams, RefundListParams, MetadataParams),
    responses((status = 200, description = "Refunds, newest first", body = Success<ListView<RefundView>>))
)]
pub(crate) async fn list(
    State(app): State<AppState>,
    Caller(caller): Caller,
    meta: RequestMeta,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = query::parse(raw.as_deref(), List::Refunds)?;
    let page = app
        .services()
        .refunds
        .list(caller, &q.refund_filter(), q.page())
        .await?;
    let data = ListView::of(&page, RefundView::new);
    Ok(meta.ok(&app, &data))
}
