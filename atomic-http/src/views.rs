//! The JSON shapes of API.md (camelCase), built from domain values (payments and refunds: core's
//! [`atomic_core::event`] views, which events carry too). Only these structs decide
//! what leaves the server: an API key view has no hash, a payment view shows its token (the
//! caller's own data) but logs never do.

use atomic_core::api_key::{ApiKey, RawApiKey};
use atomic_core::merchant::Merchant;

use atomic_core::page::Page;
use atomic_core::{Account, Entry};
use serde::Serialize;

use crate::idempotency::Reveal;

/// `{"payment": …}`, the shape of `GET /payments/:id`.
#[derive(Serialize)]
pub(crate) struct PaymentEnvelope {
    pub(crate) payment: atomic_core::event::PaymentView,
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
