//! The request bodies and list parameters as the OpenAPI document gives them. Handlers check
//! bodies field by field (`crate::fields`, so one answer names every wrong field and unknown
//! fields are refused); these types state the same fields and bounds for clients.

#![allow(dead_code)]

use std::collections::BTreeMap;

use atomic_core::event::EventType;
use atomic_core::refund::RefundReason;
use atomic_core::webhook::DeliveryStatus;
use atomic_core::{CaptureMethod, PaymentStatus, RefundStatus};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// `POST /payments`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct PaymentCreate {
    /// The account credited; the caller's own by default (required with the platform key).
    #[schema(format = "uuid")]
    merchant_id: Option<String>,
    /// Minor units.
    #[schema(minimum = 1, maximum = 99_999_999)]
    amount: i64,
    /// An ISO 4217 code the server is configured for (`USD`, `EUR`, `INR` by default).
    #[schema(pattern = "^[A-Z]{3}$", example = "USD")]
    currency: String,
    /// A card token; its name decides the simulated outcome (`tok_chargeDeclined`, …).
    #[schema(
        pattern = "^tok_[A-Za-z0-9_]+$",
        max_length = 255,
        example = "tok_visa"
    )]
    source: String,
    /// Free text (default "API Payment").
    #[schema(max_length = 1000)]
    description: Option<String>,
    /// `automatic` (default) or `manual` (authorize now, capture later).
    #[schema(value_type = Option<CaptureMethod>)]
    capture_method: Option<String>,
    /// Up to 20 keys of at most 40 characters, values of at most 500.
    #[schema(value_type = Option<BTreeMap<String, String>>)]
    metadata: Option<Metadata>,
}

/// Metadata: string keys and values.
pub(crate) type Metadata = BTreeMap<String, String>;

/// `POST /payments/:id/capture`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct CaptureBody {
    /// Minor units, at most what was authorized (all of it by default).
    #[schema(minimum = 1, maximum = 99_999_999)]
    amount: Option<i64>,
}

/// `POST /payments/:id/refunds`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct RefundCreate {
    /// Minor units, at most what is still refundable (all of it by default).
    #[schema(minimum = 1, maximum = 99_999_999)]
    amount: Option<i64>,
    #[schema(value_type = Option<RefundReason>)]
    reason: Option<String>,
    #[schema(value_type = Option<BTreeMap<String, String>>)]
    metadata: Option<Metadata>,
}

/// `POST /accounts` and `POST /merchants`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct NameAndCurrency {
    #[schema(min_length = 1, max_length = 255)]
    name: String,
    #[schema(pattern = "^[A-Z]{3}$", example = "USD")]
    currency: String,
}

/// `POST /webhook-endpoints`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct EndpointCreate {
    /// An `https://` or `http://` URL whose host resolves to public addresses only.
    #[schema(format = "uri", max_length = 2048)]
    url: String,
    /// Distinct event types, or exactly `["*"]`.
    #[schema(min_items = 1)]
    events: Vec<String>,
    #[schema(max_length = 1000)]
    description: Option<String>,
}

/// A body with no fields: `{}`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct EmptyBody {}

/// `GET /payments`' own filter.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct PaymentListParams {
    status: Option<PaymentStatus>,
}

/// `GET /refunds`' own filters.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct RefundListParams {
    /// Only the refunds of this payment (none if the caller cannot see it).
    #[param(rename = "paymentId", format = "uuid")]
    payment_id: Option<String>,
    status: Option<RefundStatus>,
}

/// `GET /events`' own filter.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct EventListParams {
    #[param(rename = "type")]
    event_type: Option<EventType>,
}

/// `GET …/deliveries`' own filter.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct DeliveryListParams {
    status: Option<DeliveryStatus>,
}

/// `GET /health`'s data.
#[derive(Serialize, ToSchema)]
pub(crate) struct Liveness {
    /// `healthy`.
    status: String,
}

/// `GET /health/ready`'s data.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Readiness {
    /// `ready` or `unavailable`.
    status: String,
    checks: Checks,
    /// Requests let through because the rate limiter could not be reached.
    limiter_fail_open: u64,
}

/// Each dependency, `up` or `down`.
#[derive(Serialize, ToSchema)]
pub(crate) struct Checks {
    store: String,
    queue: String,
    limiter: String,
}

/// The 503 of `GET /health/ready`: the report with `success: false`.
#[derive(Serialize, ToSchema)]
pub(crate) struct NotReady {
    success: bool,
    data: Readiness,
    meta: crate::envelope::Meta,
}
