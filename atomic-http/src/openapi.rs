//! The OpenAPI 3.1 document of the contract, `GET /api/v1/openapi.json`. Each route is
//! registered from its handler's `#[utoipa::path]` (see `routes`), so the router and the
//! document are built by the same calls and cannot name different routes. The answers every
//! route of a kind shares (the key errors, the body errors of a POST, `X-Request-Id`) are added
//! here by rule, once, rather than repeated on each handler.

use std::sync::LazyLock;

use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;
use serde::Serialize;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::path::{Operation, ParameterBuilder, ParameterIn};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, OpenApi, Ref, RefOr, Required, ResponseBuilder, Type, schema::ObjectBuilder,
};
use utoipa::{IntoParams, PartialSchema, ToSchema};

use crate::envelope::{Meta, json_response};

/// The routes a caller needs no key for (the health routes and this document).
const OPEN: [&str; 3] = [
    "/api/v1/health",
    "/api/v1/health/ready",
    "/api/v1/openapi.json",
];

/// `{"success": true, "data": T, "meta"}`: every success answer.
#[derive(Serialize, ToSchema)]
pub(crate) struct Success<T> {
    /// Always `true`.
    success: bool,
    data: T,
    meta: Meta,
}

/// `{"success": false, "error", "meta"}`: every error answer.
#[derive(Serialize, ToSchema)]
pub(crate) struct ErrorEnvelope {
    /// Always `false`.
    success: bool,
    error: ErrorObject,
    meta: Meta,
}

/// What went wrong.
#[derive(Serialize, ToSchema)]
pub(crate) struct ErrorObject {
    /// A stable snake_case code (`validation_error`, `not_found`, …).
    code: String,
    /// Human text; never internals.
    message: String,
    /// The fields a validation error found wrong.
    #[schema(nullable = false)]
    details: Option<Vec<ErrorDetail>>,
}

/// One field a validation error found wrong.
#[derive(Serialize, ToSchema)]
pub(crate) struct ErrorDetail {
    field: String,
    message: String,
}

/// The parameters every list takes.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub(crate) struct PageParams {
    /// Items per page (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u8>,
    /// The id of the last item of the previous page.
    #[param(rename = "startingAfter", format = "uuid")]
    starting_after: Option<String>,
    /// Only items created at or after this instant.
    #[param(rename = "createdGte", format = DateTime)]
    created_gte: Option<String>,
    /// Only items created before this instant.
    #[param(rename = "createdLt", format = DateTime)]
    created_lt: Option<String>,
}

/// `metadata[<key>]=<value>` filters (exact, ANDed, each key at most once).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub(crate) struct MetadataParams {
    /// Only items whose metadata has each of these key-value pairs.
    #[param(style = DeepObject, explode, value_type = Option<Object>)]
    metadata: Option<std::collections::BTreeMap<String, String>>,
}

/// The document, built once.
static DOCUMENT: LazyLock<Bytes> = LazyLock::new(|| {
    let document = openapi();
    Bytes::from(document.to_pretty_json().unwrap_or_default())
});

/// The OpenAPI document of every route of the API (what `GET /api/v1/openapi.json` serves).
pub fn openapi() -> OpenApi {
    let (_, mut document) = crate::routes::documented(|methods| methods).split_for_parts();
    document.info.title = "Atomic".to_owned();
    document.info.version = env!("CARGO_PKG_VERSION").to_owned();
    document.info.description = Some(
        "Payments and a double-entry ledger: the API.md contract (v1.1). Requests record \
         intent and answer at once; workers move money; events and webhooks tell the outcome."
            .to_owned(),
    );
    document.info.license = None;
    document.info.contact = None;
    let components = document.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "apiKey",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some("An API key (`sk_test_…`)"))
                .build(),
        ),
    );
    components
        .schemas
        .insert("ErrorEnvelope".to_owned(), ErrorEnvelope::schema());
    for (name, schema) in [
        ("ErrorObject", ErrorObject::schema()),
        ("ErrorDetail", ErrorDetail::schema()),
        ("Meta", Meta::schema()),
    ] {
        components.schemas.insert(name.to_owned(), schema);
    }
    for (path, item) in document.paths.paths.iter_mut() {
        for (method, operation) in operations(item) {
            shared_answers(path, method, operation);
        }
    }
    document
}

/// `GET /api/v1/openapi.json`: this document.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "operations",
    operation_id = "getOpenApi",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", content_type = "application/json", body = Object))
)]
pub(crate) async fn serve() -> Response {
    json_response(StatusCode::OK, DOCUMENT.clone())
}

fn operations(
    item: &mut utoipa::openapi::PathItem,
) -> impl Iterator<Item = (&'static str, &mut Operation)> {
    [
        ("get", item.get.as_mut()),
        ("post", item.post.as_mut()),
        ("delete", item.delete.as_mut()),
    ]
    .into_iter()
    .filter_map(|(method, op)| op.map(|op| (method, op)))
}

/// The answers a route has because of its kind, not its handler: every answer carries
/// `X-Request-Id`; a keyed route may answer 401, 429 and 400 (a malformed id or query); a POST
/// may answer the body and idempotency errors; a route with an id may answer 404; any route 500
/// and 503.
fn shared_answers(path: &str, method: &str, operation: &mut Operation) {
    let keyed = !OPEN.contains(&path);
    let mut errors: Vec<(u16, &str)> = vec![
        (500, "Internal error (no internals in the body)"),
        (
            503,
            "Unavailable or timed out; nothing was stored; retry after `Retry-After`",
        ),
    ];
    if keyed {
        errors.push((400, "A malformed id, query parameter or body"));
        errors.push((401, "Missing, malformed, unknown or revoked API key"));
        errors.push((429, "A rate limit is spent; retry after `Retry-After`"));
        operation.security = Some(vec![SecurityRequirement::new(
            "apiKey",
            Vec::<String>::new(),
        )]);
    }
    if path.contains('{') {
        errors.push((404, "No such object, or not the caller's"));
    }
    if method == "post" {
        errors.push((403, "This key may not do that"));
        errors.push((
            409,
            "The same Idempotency-Key is in flight, or the object's state forbids this",
        ));
        errors.push((413, "The body is larger than 65,536 bytes"));
        errors.push((415, "The body is not `application/json`"));
        errors.push((
            422,
            "Understood but refused (an amount, a currency, a limit, a reused Idempotency-Key)",
        ));
        idempotency_header(operation);
    }
    for (status, description) in errors {
        operation
            .responses
            .responses
            .entry(status.to_string())
            .or_insert_with(|| error_response(description));
    }
    for response in operation.responses.responses.values_mut() {
        if let RefOr::T(response) = response {
            response.headers.insert(
                "X-Request-Id".to_owned(),
                HeaderBuilder::new()
                    .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                    .description(Some(
                        "The caller's request id if it sent a sane one, else a new one",
                    ))
                    .build()
                    .into(),
            );
        }
    }
    links(operation);
}

fn error_response(description: &str) -> RefOr<utoipa::openapi::Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorEnvelope")))
                .build(),
        )
        .build()
        .into()
}

fn idempotency_header(operation: &mut Operation) {
    let parameter = ParameterBuilder::new()
        .name("Idempotency-Key")
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(
            "Makes a retry safe: the same key and body within 24 hours answer the first \
             response again (`Idempotent-Replayed: true`)",
        ))
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(255))
                .pattern(Some("^[\\x21-\\x7E]+$")),
        ))
        .build();
    operation
        .parameters
        .get_or_insert_with(Vec::new)
        .push(parameter.into());
}

/// Links from an answer to what a client does next with the object it names (`from`
/// operation, link name, `to` operation, where the `id` comes from), so a stateful client (or
/// fuzzer) can chain the calls.
const LINKS: &[(&str, &str, &str, &str)] = &[
    (
        "createPayment",
        "GetPayment",
        "getPayment",
        "$response.body#/data/id",
    ),
    (
        "createPayment",
        "CapturePayment",
        "capturePayment",
        "$response.body#/data/id",
    ),
    (
        "createPayment",
        "CancelPayment",
        "cancelPayment",
        "$response.body#/data/id",
    ),
    (
        "createPayment",
        "RefundPayment",
        "createRefund",
        "$response.body#/data/id",
    ),
    (
        "createPayment",
        "MerchantEntries",
        "listEntries",
        "$response.body#/data/merchantId",
    ),
    (
        "getPayment",
        "RefundPayment",
        "createRefund",
        "$response.body#/data/payment/id",
    ),
    (
        "getPayment",
        "CapturePayment",
        "capturePayment",
        "$response.body#/data/payment/id",
    ),
    (
        "capturePayment",
        "GetPayment",
        "getPayment",
        "$response.body#/data/id",
    ),
    (
        "capturePayment",
        "RefundPayment",
        "createRefund",
        "$response.body#/data/id",
    ),
    (
        "cancelPayment",
        "GetPayment",
        "getPayment",
        "$response.body#/data/id",
    ),
    (
        "createRefund",
        "GetRefund",
        "getRefund",
        "$response.body#/data/id",
    ),
    (
        "createRefund",
        "GetPayment",
        "getPayment",
        "$response.body#/data/paymentId",
    ),
    (
        "createAccount",
        "GetAccount",
        "getAccount",
        "$response.body#/data/id",
    ),
    (
        "createAccount",
        "AccountEntries",
        "listEntries",
        "$response.body#/data/id",
    ),
    (
        "createMerchant",
        "GetAccount",
        "getAccount",
        "$response.body#/data/account/id",
    ),
    (
        "createMerchant",
        "AccountEntries",
        "listEntries",
        "$response.body#/data/account/id",
    ),
    (
        "createApiKey",
        "RevokeApiKey",
        "revokeApiKey",
        "$response.body#/data/id",
    ),
    (
        "listEvents",
        "GetEvent",
        "getEvent",
        "$response.body#/data/items/0/id",
    ),
    (
        "createWebhookEndpoint",
        "GetWebhookEndpoint",
        "getWebhookEndpoint",
        "$response.body#/data/id",
    ),
    (
        "createWebhookEndpoint",
        "ListDeliveries",
        "listDeliveries",
        "$response.body#/data/id",
    ),
    (
        "createWebhookEndpoint",
        "DeleteWebhookEndpoint",
        "deleteWebhookEndpoint",
        "$response.body#/data/id",
    ),
];

fn links(operation: &mut Operation) {
    let Some(from) = operation.operation_id.clone() else {
        return;
    };
    for (status, response) in operation.responses.responses.iter_mut() {
        let RefOr::T(response) = response else {
            continue;
        };
        if !status.starts_with('2') {
            continue;
        }
        for (_, name, to, id) in LINKS.iter().filter(|link| link.0 == from) {
            response.links.insert(
                (*name).to_owned(),
                LinkBuilder::new()
                    .operation_id(*to)
                    .parameter("id", *id)
                    .build()
                    .into(),
            );
        }
    }
}
