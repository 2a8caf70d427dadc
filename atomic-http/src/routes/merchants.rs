//! `POST /merchants` (platform key only, 201): the merchant, its primary account and its first
//! API key, whose secret appears in this response and never again.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use super::shapes::NameAndCurrency;
use super::{RequestMeta, name_and_currency};
use crate::AppState;
use crate::body::JsonBody;
use crate::error::ApiError;
use crate::gate::Caller;
use crate::idempotency::IdempotencyHeader;
use crate::openapi::Success;
use crate::views::{AccountView, ApiKeyView, MerchantView, OnboardingView};

#[utoipa::path(
    post, path = "/api/v1/merchants", tag = "merchants", operation_id = "createMerchant",
    request_body = NameAndCurrency,
    responses((status = 201, description = "The merchant, its account and its first key (the raw key only here)", body = Success<OnboardingView>))
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
            |_claim| async { services.merchants.prepare(caller, name, currency) },
            |(onboarding, raw), reveal| OnboardingView {
                merchant: MerchantView::new(&onboarding.merchant),
                account: AccountView::new(&onboarding.account),
                api_key: ApiKeyView::minted(&onboarding.key, raw, reveal),
            },
            |(onboarding, _raw), completion| {
                let merchants = services.merchants.clone();
                async move { merchants.submit(&onboarding, completion).await }
            },
        )
        .await
}
