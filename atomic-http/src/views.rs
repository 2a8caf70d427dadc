//! The JSON shapes of API.md (camelCase), built from domain values. Only these structs decide
//! what leaves the server: an API key view has no hash, a payment view shows its token (the
//! caller's own data) but logs never do.

use atomic_core::api_key::{ApiKey, RawApiKey};
use atomic_core::merchant::Merchant;
use std::collections::BTreeMap;

use atomic_core::page::Page;
use atomic_core::{Account, Entry, Metadata, Payment, Refund};
use serde::Serialize;

use crate::idempotency::Reveal;

/// A payment.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PaymentView {
    id: String,
    merchant_id: String,
    amount: i64,
    currency: String,
    source: String,
    description: String,
    status: &'static str,
    failure_reason: Option<&'static str>,
    capture_method: &'static str,
    amount_captured: i64,
    amount_refunded: i64,
    cancellation_reason: Option<&'static str>,
    metadata: BTreeMap<String, String>,
    idempotency_key: Option<String>,
    created_at: String,
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
    pub(crate) fn new(p: &Payment) -> Self {
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
#[serde(rename_all = "camelCase")]
pub(crate) struct RefundView {
    id: String,
    payment_id: String,
    merchant_id: String,
    amount: i64,
    currency: String,
    reason: Option<&'static str>,
    status: &'static str,
    failure_reason: Option<&'static str>,
    metadata: BTreeMap<String, String>,
    idempotency_key: Option<String>,
    created_at: String,
    updated_at: String,
}

impl RefundView {
    /// The view of a record.
    pub(crate) fn new(r: &Refund) -> Self {
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

/// `{"payment": …}`, the shape of `GET /payments/:id`.
#[derive(Serialize)]
pub(crate) struct PaymentEnvelope {
    pub(crate) payment: PaymentView,
}

/// An account.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AccountView {
    id: String,
    name: String,
    balance: i64,
    currency: String,
    allow_negative: bool,
    created_at: String,
}

impl AccountView {
    /// The view of a record.
    pub(crate) fn new(a: &Account) -> Self {
        Self {
            id: a.id.to_string(),
            name: a.name.as_str().to_owned(),
            balance: a.balance.minor_units(),
            currency: a.currency.to_string(),
            allow_negative: a.allow_negative(),
            created_at: a.created_at.to_string(),
        }
    }
}

/// A ledger entry; `refundId` is `null` on a payment's charge posting.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EntryView {
    id: String,
    transaction_id: String,
    payment_id: String,
    refund_id: Option<String>,
    account_id: String,
    direction: &'static str,
    amount: i64,
    created_at: String,
}

impl EntryView {
    /// The view of a record.
    pub(crate) fn new(e: &Entry) -> Self {
        Self {
            id: e.id.to_string(),
            transaction_id: e.transaction_id.to_string(),
            payment_id: e.payment_id.to_string(),
            refund_id: e.refund_id.map(|id| id.to_string()),
            account_id: e.account_id.to_string(),
            direction: e.direction.as_str(),
            amount: e.amount.minor_units(),
            created_at: e.created_at.to_string(),
        }
    }
}

/// A merchant.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MerchantView {
    id: String,
    name: String,
    created_at: String,
}

impl MerchantView {
    /// The view of a record.
    pub(crate) fn new(m: &Merchant) -> Self {
        Self {
            id: m.id.to_string(),
            name: m.name.as_str().to_owned(),
            created_at: m.created_at.to_string(),
        }
    }
}

/// An API key; `key` (the raw secret) only in the response that minted it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ApiKeyView {
    id: String,
    prefix: String,
    created_at: String,
    revoked_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
}

impl ApiKeyView {
    /// A stored key (no secret).
    pub(crate) fn stored(k: &ApiKey) -> Self {
        Self {
            id: k.id.to_string(),
            prefix: k.prefix.clone(),
            created_at: k.created_at.to_string(),
            revoked_at: k.revoked_at.map(|t| t.to_string()),
            key: None,
        }
    }

    /// A key just minted: with its secret when it goes to the caller, without it when the
    /// response is kept for replays.
    pub(crate) fn minted(k: &ApiKey, raw: &RawApiKey, reveal: Reveal) -> Self {
        Self {
            key: (reveal == Reveal::Secrets).then(|| raw.expose().to_owned()),
            ..Self::stored(k)
        }
    }
}

/// `POST /merchants`' answer.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct OnboardingView {
    pub(crate) merchant: MerchantView,
    pub(crate) account: AccountView,
    pub(crate) api_key: ApiKeyView,
}

/// A page of items: `{"items": [...], "hasMore": bool}`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ListView<T> {
    items: Vec<T>,
    has_more: bool,
}

impl<T> ListView<T> {
    /// Views of a page.
    pub(crate) fn of<U>(page: &Page<U>, view: impl Fn(&U) -> T) -> Self {
        Self {
            items: page.items.iter().map(view).collect(),
            has_more: page.has_more,
        }
    }
}
