//! `POST /merchants` (platform key only, 201): the merchant, its primary account and its first
//! API key, whose secret appears in this response and never again.

use atomic_core::merchant::MerchantName;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use super::RequestMeta;
use crate::AppState;
use crate::body::JsonBody;
use crate::error::ApiError;
use crate::fields::{Fields, string};
use crate::gate::Caller;
use crate::idempotency::{Create, IdempotencyHeader};
use crate::views::{AccountView, ApiKeyView, MerchantView, OnboardingView};

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
    let name = f.required("name", |v| MerchantName::parse(string(v)?));
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
        async { Ok(services.merchants.prepare(caller, name, currency)?) },
        |(onboarding, raw)| OnboardingView {
            merchant: MerchantView::new(&onboarding.merchant),
            account: AccountView::new(&onboarding.account),
            api_key: ApiKeyView::minted(&onboarding.key, raw),
        },
        |(onboarding, _raw), completion| async move {
            services.merchants.submit(&onboarding, completion).await
        },
    )
    .await
}
