//! `POST /payments` (202, the payment stored `PENDING`), `GET /payments/:id`, `GET /payments`,
//! and the decisions on an authorization: `POST /payments/:id/capture` (202, the payment now
//! `PROCESSING`; a worker posts it) and `POST /payments/:id/cancel` (200, `CANCELED`).

use atomic_core::payment::Description;
use atomic_core::{
    AccountId, Amount, CaptureMethod, CardSource, Invalid, PaymentId, PaymentRequest, Principal,
};
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
use atomic_core::event::PaymentView;

use super::shapes::{CaptureBody, EmptyBody, PaymentCreate, PaymentListParams};
use crate::openapi::{ErrorEnvelope, MetadataParams, PageParams, Success};
use crate::views::{ListView, PaymentEnvelope};

#[utoipa::path(
    post, path = "/api/v1/payments", tag = "payments", operation_id = "createPayment",
    request_body = PaymentCreate,
    responses((status = 202, description = "Stored `PENDING`; a worker settles it", body = Success<PaymentView>),
              (status = 404, description = "`merchantId` names no account (`merchant_not_found`)", body = ErrorEnvelope))
)]
pub(crate) async fn create(
    State(app): State<AppState>,
    Caller(caller): Caller,
    meta: RequestMeta,
    idempotency: IdempotencyHeader,
    body: JsonBody,
) -> Result<Response, ApiError> {
    let services = app.services();
    let request = payment_request(&app, caller, &body)?;
    meta.create(&app, caller, &idempotency, &body, StatusCode::ACCEPTED)?
        .run(
            |claim| async move {
                services
                    .payments
                    .prepare(caller, request, claim.as_ref())
                    .await
            },
            |payment, _| PaymentView::new(payment),
            |payment, completion| {
                let payments = services.payments.clone();
                async move { payments.submit(&payment, completion).await }
            },
        )
        .await
}

/// The fields `POST /payments` takes.
const PAYMENT_FIELDS: &[&str] = &[
    "merchantId",
    "amount",
    "currency",
    "source",
    "description",
    "captureMethod",
    "metadata",
];

/// The body of `POST /payments`, every field checked.
fn payment_request(
    app: &AppState,
    caller: Principal,
    body: &JsonBody,
) -> Result<PaymentRequest, ApiError> {
    let currencies = &app.services().config().currencies;
    let mut f = Fields::new(&body.object, PAYMENT_FIELDS);
    let merchant_account = f.optional("merchantId", |v| string(v)?.parse::<AccountId>());
    let amount = f.required("amount", |v| Amount::for_payment(integer(v)?));
    let currency = f.required("currency", |v| currencies.parse(string(v)?));
    let source = f.required("source", |v| CardSource::parse(string(v)?));
    let description = f.optional("description", |v| Description::parse(string(v)?));
    let capture_method = f.optional("captureMethod", |v| CaptureMethod::parse(string(v)?));
    let metadata = f.optional_not_null("metadata", metadata);
    if caller == Principal::Platform && matches!(merchant_account, Some(None)) {
        // A body error, so it is found before the idempotency step (API.md's order).
        f.fail(
            "merchantId",
            Invalid::new("is required with the platform key"),
        );
    }
    f.finish()?;
    // Every field parsed once nothing was refused.
    let request = || {
        Some(PaymentRequest {
            merchant_account: merchant_account?,
            amount: amount?,
            currency: currency?,
            source: source?,
            description: description?,
            capture_method: capture_method?.unwrap_or_default(),
            metadata: metadata?.unwrap_or_default(),
        })
    };
    request().ok_or(ApiError::Validation(Vec::new()))
}

/// `POST /payments/:id/capture` with `{"amount"?}` (all that was authorized by default).
#[utoipa::path(
    post, path = "/api/v1/payments/{id}/capture", tag = "payments", operation_id = "capturePayment",
    params(("id" = String, Path, format = "uuid", description = "The payment's id")),
    request_body(content = Option<CaptureBody>, description = "The amount to capture (all that was authorized by default)"),
    responses((status = 202, description = "Now `PROCESSING`; a worker posts the capture", body = Success<PaymentView>))
)]
pub(crate) async fn capture(
    State(app): State<AppState>,
    Caller(caller): Caller,
    meta: RequestMeta,
    Path(id): Path<String>,
    idempotency: IdempotencyHeader,
    body: JsonBody,
) -> Result<Response, ApiError> {
    let id = path_id::<PaymentId>(&id)?;
    let mut f = Fields::new(&body.object, &["amount"]);
    let amount = f.optional("amount", |v| Amount::for_payment(integer(v)?));
    f.finish()?;
    let amount = amount.flatten();
    let services = app.services();
    meta.create(&app, caller, &idempotency, &body, StatusCode::ACCEPTED)?
        .run(
            |_claim| async move { services.payments.prepare_capture(caller, id, amount).await },
            |payment, _| PaymentView::new(payment),
            |payment, completion| {
                let payments = services.payments.clone();
                async move {
                    payments
                        .submit_capture(&payment, completion)
                        .await
                        .map(drop)
                }
            },
        )
        .await
}

/// `POST /payments/:id/cancel` with `{}`.
#[utoipa::path(
    post, path = "/api/v1/payments/{id}/cancel", tag = "payments", operation_id = "cancelPayment",
    params(("id" = String, Path, format = "uuid", description = "The payment's id")),
    request_body(content = Option<EmptyBody>, description = "`{}`"),
    responses((status = 200, description = "Now `CANCELED`", body = Success<PaymentView>))
)]
pub(crate) async fn cancel(
    State(app): State<AppState>,
    Caller(caller): Caller,
    meta: RequestMeta,
    Path(id): Path<String>,
    idempotency: IdempotencyHeader,
    body: JsonBody,
) -> Result<Response, ApiError> {
    let id = path_id::<PaymentId>(&id)?;
    Fields::new(&body.object, &[]).finish()?;
    let services = app.services();
    meta.create(&app, caller, &idempotency, &body, StatusCode::OK)?
        .run(
            |_claim| async move { services.payments.prepare_cancel(caller, id).await },
            |payment, _| PaymentView::new(payment),
            |payment, completion| {
                let payments = services.payments.clone();
                async move { payments.submit_cancel(&payment, completion).await.map(drop) }
            },
        )
        .await
}

#[utoipa::path(
    get, path = "/api/v1/payments/{id}", tag = "payments", operation_id = "getPayment",
    params(("id" = String, Path, format = "uuid", description = "The payment's id")),
    responses((status = 200, description = "The payment", body = Success<PaymentEnvelope>))
)]
pub(crate) async fn show(
    State(app): State<AppState>,
    Caller(caller): Caller,
    meta: RequestMeta,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let payment = app
        .services()
        .payments
        .get(caller, path_id::<PaymentId>(&id)?)
        .await?;
    let data = PaymentEnvelope {
        payment: PaymentView::new(&payment),
    };
    Ok(meta.ok(&app, &data))
}

#[utoipa::path(
    get, path = "/api/v1/payments", tag = "payments", operation_id = "listPayments",
    params(PageParams, PaymentListParams, MetadataParams),
    responses((status = 200, description = "Payments, newest first", body = Success<ListView<PaymentView>>))
)]
pub(crate) async fn list(
    State(app): State<AppState>,
    Caller(caller): Caller,
    meta: RequestMeta,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = query::parse(raw.as_deref(), List::Payments)?;
    let page = app
        .services()
        .payments
        .list(caller, &q.payment_filter(), q.page())
        .await?;
    let data = ListView::of(&page, PaymentView::new);
    Ok(meta.ok(&app, &data))
}
