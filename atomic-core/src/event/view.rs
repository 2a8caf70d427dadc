//! The JSON shapes of a payment and a refund as API.md renders them (camelCase). They live in
//! core because an event carries the object as `GET` would have rendered it right after the
//! change, written in the store transaction of that change; the HTTP layer answers with the
//! same views.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::metadata::Metadata;
use crate::payment::Payment;
use crate::refund::Refund;

/// A payment.
#[derive(Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct PaymentView {
    #[cfg_attr(feature = "openapi", schema(format = "uuid"))]
    id: String,
    #[cfg_attr(feature = "openapi", schema(format = "uuid"))]
    merchant_id: String,
    /// Minor units (1..=99,999,999).
    amount: i64,
    #[cfg_attr(feature = "openapi", schema(example = "USD"))]
    currency: String,
    /// The card token the payment was made with.
    source: String,
    description: String,
    #[cfg_attr(feature = "openapi", schema(value_type = crate::payment::PaymentStatus))]
    status: &'static str,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::payment::FailureReason>))]
    failure_reason: Option<&'static str>,
    #[cfg_attr(feature = "openapi", schema(value_type = crate::payment::CaptureMethod))]
    capture_method: &'static str,
    amount_captured: i64,
    amount_refunded: i64,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::payment::CancellationReason>))]
    cancellation_reason: Option<&'static str>,
    metadata: BTreeMap<String, String>,
    idempotency_key: Option<String>,
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    created_at: String,
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    updated_at: String,
}

/// Metadata as a JSON object (`{}` when there is none).
fn metadata_view(metadata: &Metadata) -> BTreeMap<String, String> {
    metadata
        .iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

impl PaymentView {
    /// The view of a record.
    pub fn new(p: &Payment) -> Self {
        Self {
            id: p.id.to_string(),
            merchant_id: p.merchant_account.to_string(),
            amount: p.amount.minor_units(),
            currency: p.currency.to_string(),
            source: p.source.expose().to_owned(),
            description: p.description.as_str().to_owned(),
            status: p.status().as_str(),
            failure_reason: p.failure_reason().map(|r| r.as_str()),
            capture_method: p.capture_method.as_str(),
            amount_captured: p.amount_captured(),
            amount_refunded: p.amount_refunded(),
            cancellation_reason: p.cancellation_reason().map(|r| r.as_str()),
            metadata: metadata_view(&p.metadata),
            idempotency_key: p.idempotency_key.as_ref().map(|k| k.as_str().to_owned()),
            created_at: p.created_at.to_string(),
            updated_at: p.updated_at().to_string(),
        }
    }
}

/// A refund.
#[derive(Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct RefundView {
    #[cfg_attr(feature = "openapi", schema(format = "uuid"))]
    id: String,
    #[cfg_attr(feature = "openapi", schema(format = "uuid"))]
    payment_id: String,
    #[cfg_attr(feature = "openapi", schema(format = "uuid"))]
    merchant_id: String,
    /// Minor units.
    amount: i64,
    #[cfg_attr(feature = "openapi", schema(example = "USD"))]
    currency: String,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::refund::RefundReason>))]
    reason: Option<&'static str>,
    #[cfg_attr(feature = "openapi", schema(value_type = crate::refund::RefundStatus))]
    status: &'static str,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::refund::RefundFailureReason>))]
    failure_reason: Option<&'static str>,
    metadata: BTreeMap<String, String>,
    idempotency_key: Option<String>,
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    created_at: String,
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    updated_at: String,
}

impl RefundView {
    /// The view of a record.
    pub fn new(r: &Refund) -> Self {
        Self {
            id: r.id.to_string(),
            payment_id: r.payment_id.to_string(),
            merchant_id: r.merchant_account.to_string(),
            amount: r.amount.minor_units(),
            currency: r.currency.to_string(),
            reason: r.reason.map(|reason| reason.as_str()),
            status: r.status().as_str(),
            failure_reason: r.failure_reason().map(|reason| reason.as_str()),
            metadata: metadata_view(&r.metadata),
            idempotency_key: r.idempotency_key.as_ref().map(|k| k.as_str().to_owned()),
            created_at: r.created_at.to_string(),
            updated_at: r.updated_at().to_string(),
        }
    }
}
