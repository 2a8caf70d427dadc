//! The route table of API.md. Protected routes go through the gate as a per-method layer, so
//! an unknown route (404) or a wrong method (405) is answered before any key is looked at.

mod accounts;
mod api_keys;
mod events;
mod health;
mod merchants;
mod payments;
mod refunds;
mod shapes;
mod webhooks;

use atomic_core::idempotency::Fingerprint;
use atomic_core::text::Name;
use atomic_core::{Currency, Invalid, Principal};
use axum::Router;
use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::middleware::from_fn_with_state;
use axum::response::Response;
use axum::routing::MethodRouter;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};
use utoipa_axum::routes;

use crate::AppState;
use crate::body::JsonBody;
use crate::deadline::Commit;
use crate::envelope::{Meta, json_response, success_body};
use crate::error::ApiError;
use crate::fields::{Fields, string};
use crate::gate::gate;
use crate::idempotency::{Create, IdempotencyHeader};
use crate::request_id::RequestId;

pub(crate) fn routes(app: &AppState) -> Router<AppState> {
    let app = app.clone();
    let (router, _) =
        documented(move |methods| methods.route_layer(from_fn_with_state(app.clone(), gate)))
            .split_for_parts();
    router.fallback(|| async { ApiError::NotFound })
}

/// Every route of the contract with its document entry; `guard` wraps the methods of each
/// keyed route (the key gate in the router, nothing when only the document is wanted).
pub(crate) fn documented(
    guard: impl Fn(MethodRouter<AppState>) -> MethodRouter<AppState>,
) -> OpenApiRouter<AppState> {
    let keyed =
        |(schemas, paths, methods): UtoipaMethodRouter<AppState>| (schemas, paths, guard(methods));
    OpenApiRouter::new()
        .routes(routes!(health::live))
        .routes(routes!(health::ready))
        .routes(routes!(crate::openapi::serve))
        .routes(keyed(routes!(payments::create, payments::list)))
        .routes(keyed(routes!(payments::show)))
        .routes(keyed(routes!(payments::capture)))
        .routes(keyed(routes!(payments::cancel)))
        .routes(keyed(routes!(refunds::create)))
        .routes(keyed(routes!(refunds::list)))
        .routes(keyed(routes!(refunds::show)))
        .routes(keyed(routes!(accounts::create)))
        .routes(keyed(routes!(accounts::show)))
        .routes(keyed(routes!(accounts::entries)))
        .routes(keyed(routes!(merchants::create)))
        .routes(keyed(routes!(api_keys::create, api_keys::list)))
        .routes(keyed(routes!(api_keys::revoke)))
        .routes(keyed(routes!(events::list)))
        .routes(keyed(routes!(events::show)))
        .routes(keyed(routes!(webhooks::create, webhooks::list)))
        .routes(keyed(routes!(webhooks::show, webhooks::delete)))
        .routes(keyed(routes!(webhooks::deliveries)))
        .routes(keyed(routes!(webhooks::retry)))
}

/// The health routes alone (liveness and readiness), which every role of the server serves.
pub(crate) fn health_routes() -> Router<AppState> {
    let (router, _) = OpenApiRouter::new()
        .routes(routes!(health::live))
        .routes(routes!(health::ready))
        .split_for_parts();
    router
}

/// What every handler needs to answer: the request id and path.
pub(crate) struct RequestMeta {
    request_id: RequestId,
    path: String,
    commit: Option<Commit>,
}

impl RequestMeta {
    /// The `meta` object, stamped now.
    pub(crate) fn meta(&self, app: &AppState) -> Meta {
        Meta::new(app.now(), &self.request_id)
    }

    /// A 200 answer with `data`.
    pub(crate) fn ok(&self, app: &AppState, data: &impl serde::Serialize) -> Response {
        self.answer(app, StatusCode::OK, data)
    }

    /// A success answer with this status and `data`.
    pub(crate) fn answer(
        &self,
        app: &AppState,
        status: StatusCode,
        data: &impl serde::Serialize,
    ) -> Response {
        json_response(status, success_body(data, &self.meta(app)))
    }

    /// The create step of a POST: its caller, idempotency key, fingerprint and answer status.
    pub(crate) fn create<'a>(
        &self,
        app: &'a AppState,
        caller: Principal,
        idempotency: &IdempotencyHeader,
        body: &JsonBody,
        status: StatusCode,
    ) -> Result<Create<'a>, ApiError> {
        Ok(Create {
            services: app.services(),
            caller,
            key: idempotency.key()?,
            fingerprint: Fingerprint::of("POST", &self.path, &body.canonical),
            status,
            meta: self.meta(app),
            commit: self.commit.clone(),
        })
    }
}

/// The `{"name", "currency"}` body of `POST /accounts` and `POST /merchants`.
pub(crate) fn name_and_currency(
    app: &AppState,
    body: &JsonBody,
) -> Result<(Name, Currency), ApiError> {
    let currencies = &app.services().config().currencies;
    let mut f = Fields::new(&body.object, &["name", "currency"]);
    let name = f.required("name", |v| Name::parse(string(v)?));
    let currency = f.required("currency", |v| currencies.parse(string(v)?));
    f.finish()?;
    match (name, currency) {
        (Some(name), Some(currency)) => Ok((name, currency)),
        _ => Err(ApiError::Validation(Vec::new())),
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequestMeta {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self {
            request_id: parts
                .extensions
                .get::<RequestId>()
                .cloned()
                .unwrap_or_else(RequestId::generate),
            path: parts.uri.path().to_owned(),
            commit: parts.extensions.get::<Commit>().cloned(),
        })
    }
}

/// Parses an id from the path: malformed is 400, as API.md says.
pub(crate) fn path_id<T: std::str::FromStr<Err = Invalid>>(raw: &str) -> Result<T, ApiError> {
    raw.parse().map_err(|e| ApiError::field("id", e))
}
