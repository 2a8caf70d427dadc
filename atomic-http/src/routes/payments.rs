//! `POST /payments` (202, the payment stored `PENDING`), `GET /payments/:id`, `GET /payments`.

use atomic_core::payment::Description;
use atomic_core::{AccountId, Amount, CardSource, Invalid, PaymentId, PaymentRequest, Principal};
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::{RequestMeta, path_id};
use crate::AppState;
use crate::body::JsonBody;
use crate::error::ApiError;
use crate::fields::{Fields, integer, string};
use crate::gate::Caller;
use crate::idempotency::IdempotencyHeader;
use crate::query;
use crate::views::{ListView, PaymentEnvelope, PaymentView};

pub(crate) async fn create(
    State(app): State<AppState>,
    Caller(caller): Caller,
    meta: RequestMeta,
    idempotency: IdempotencyHeader,
    body: JsonBody,
) -> Result<Response, ApiError> {
    let services = app.services();
    let currencies = &services.config().currencies;
    let mut f = Fields::new(
        &body.object,
        &["merchantId", "amount", "currency", "source", "description"],
    );
    let merchant_account = f.optional("merchantId", |v| string(v)?.parse::<AccountId>());
    let amount = f.required("amount", |v| Amount::for_payment(integer(v)?));
    let currency = f.required("currency", |v| currencies.parse(string(v)?));
    let source = f.required("source", |v| CardSource::parse(string(v)?));
    let description = f.optional("description", |v| Description::parse(string(v)?));
    if caller == Principal::Platform && matches!(merchant_account, Some(None)) {
        // A body error, so it is found before the idempotency step (API.md's order).
        f.fail(
            "merchantId",
            Invalid::new("is required with the platform key"),
        );
    }
    f.finish()?;
    let (Some(merchant_account), Some(amount), Some(currency), Some(source), Some(description)) =
        (merchant_account, amount, currency, source, description)
    else {
        return Err(ApiError::Validation(Vec::new()));
    };
    let request = PaymentRequest {
        merchant_account,
        amount,
        currency,
        source,
        description,
        capture_method: Default::default(),
        metadata: Default::default(),
    };
    meta.create(&app, caller, &idempotency, &body, StatusCode::ACCEPTED)?
        .run(
            |claim| async move {
                Ok(services
                    .payments
                    .prepare(caller, request, claim.as_ref())
                    .await?)
            },
            |payment, _| PaymentView::new(payment),
            |payment, completion| {
                let payments = services.payments.clone();
                async move { payments.submit(&payment, completion).await }
            },
        )
        .await
}

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

pub(crate) async fn list(
    State(app): State<AppState>,
    Caller(caller): Caller,
    meta: RequestMeta,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = query::parse(raw.as_deref(), true)?;
    let page = app
        .services()
        .payments
        .list(
            caller,
            &atomic_core::ports::PaymentFilter {
                status: q.status,
                ..Default::default()
            },
            q.page(),
        )
        .await?;
    let data = ListView::of(&page, PaymentView::new);
    Ok(meta.ok(&app, &data))
}
