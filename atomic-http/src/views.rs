//! The JSON shapes of API.md (camelCase), built from domain values (payments and refunds: core's
//! [`atomic_core::event`] views, which events carry too; events: the JSON they were written
//! as). Only these structs decide what leaves the server: an API key view has no hash, an
//! endpoint view shows its secret only when it was just made, a payment view shows its token
//! (the caller's own data) but logs never do.

use atomic_core::api_key::{ApiKey, RawApiKey};
use atomic_core::event::Event;
use atomic_core::merchant::Merchant;
use atomic_core::page::Page;
use atomic_core::webhook::{WebhookDelivery, WebhookEndpoint};
use atomic_core::{Account, Entry};
use serde::Serialize;
use serde_json::value::RawValue;
use utoipa::ToSchema;

use crate::idempotency::Reveal;

/// `{"payment": …}`, the shape of `GET /payments/:id`.
#[derive(Serialize, ToSchema)]
pub(crate) struct PaymentEnvelope {
    pub(crate) payment: atomic_core::event::PaymentView,
}

/// An account.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AccountView {
    #[schema(format = "uuid")]
    id: String,
    name: String,
    balance: i64,
    currency: String,
    allow_negative: bool,
    #[schema(format = DateTime)]
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
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EntryView {
    #[schema(format = "uuid")]
    id: String,
    #[schema(format = "uuid")]
    transaction_id: String,
    #[schema(format = "uuid")]
    payment_id: String,
    #[schema(format = "uuid")]
    refund_id: Option<String>,
    #[schema(format = "uuid")]
    account_id: String,
    #[schema(value_type = Direction)]
    direction: &'static str,
    amount: i64,
    #[schema(format = DateTime)]
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
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MerchantView {
    #[schema(format = "uuid")]
    id: String,
    name: String,
    #[schema(format = DateTime)]
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
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ApiKeyView {
    #[schema(format = "uuid")]
    id: String,
    prefix: String,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    revoked_at: Option<String>,
    /// The raw key: only in the response that minted it.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
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
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct OnboardingView {
    pub(crate) merchant: MerchantView,
    pub(crate) account: AccountView,
    pub(crate) api_key: ApiKeyView,
}

/// A webhook endpoint; `secret` only in the response that made it.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EndpointView {
    #[schema(format = "uuid")]
    id: String,
    url: String,
    /// Event types, or `["*"]` for every type.
    #[schema(value_type = Vec<String>)]
    events: Vec<&'static str>,
    description: Option<String>,
    #[schema(format = DateTime)]
    created_at: String,
    /// The signing secret (`whsec_…`): only in the response that made the endpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    secret: Option<String>,
}

impl EndpointView {
    /// A stored endpoint (no secret).
    pub(crate) fn stored(e: &WebhookEndpoint) -> Self {
        Self {
            id: e.id.to_string(),
            url: e.url.as_str().to_owned(),
            events: e.subscription.names(),
            description: e.description.as_ref().map(|d| d.as_str().to_owned()),
            created_at: e.created_at.to_string(),
            secret: None,
        }
    }

    /// An endpoint just made: with its secret when it goes to the caller, without it when the
    /// response is kept for replays.
    pub(crate) fn created(e: &WebhookEndpoint, reveal: Reveal) -> Self {
        Self {
            secret: (reveal == Reveal::Secrets).then(|| e.secret.reveal()),
            ..Self::stored(e)
        }
    }
}

/// A webhook delivery: one event for one endpoint, and where its attempts stand.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DeliveryView {
    #[schema(format = "uuid")]
    id: String,
    #[schema(format = "uuid")]
    event_id: String,
    #[schema(format = "uuid")]
    endpoint_id: String,
    #[schema(value_type = atomic_core::webhook::DeliveryStatus)]
    status: &'static str,
    attempts: u32,
    #[schema(format = DateTime)]
    last_attempt_at: Option<String>,
    last_status_code: Option<u16>,
    last_error: Option<String>,
    #[schema(format = DateTime)]
    next_attempt_at: Option<String>,
    #[schema(format = DateTime)]
    created_at: String,
}

impl DeliveryView {
    /// The view of a record.
    pub(crate) fn new(d: &WebhookDelivery) -> Self {
        Self {
            id: d.id.to_string(),
            event_id: d.event_id.to_string(),
            endpoint_id: d.endpoint_id.to_string(),
            status: d.status.as_str(),
            attempts: d.attempts,
            last_attempt_at: d.last_attempt_at.map(|t| t.to_string()),
            last_status_code: d.last_status_code,
            last_error: d.last_error.clone(),
            next_attempt_at: d.next_attempt_at.map(|t| t.to_string()),
            created_at: d.created_at.to_string(),
        }
    }
}

/// An event exactly as it was rendered when it was written (the bytes its webhook deliveries
/// carry), not re-rendered from today's records.
pub(crate) fn event_view(e: &Event) -> Result<Box<RawValue>, atomic_core::Error> {
    RawValue::from_string(e.body.clone()).map_err(|error| {
        atomic_core::Error::backend(format!("event {} is not JSON: {error}", e.id))
    })
}

/// A ledger entry's side.
#[derive(ToSchema)]
#[schema(rename_all = "UPPERCASE")]
#[allow(dead_code)]
pub(crate) enum Direction {
    /// Money out of the account.
    Debit,
    /// Money into the account.
    Credit,
}

/// An event, as it was rendered when it was written.
#[derive(ToSchema)]
#[allow(dead_code)]
#[schema(rename_all = "camelCase")]
pub(crate) struct EventDoc {
    #[schema(format = "uuid")]
    id: String,
    #[schema(rename = "type")]
    event_type: atomic_core::event::EventType,
    #[schema(format = "uuid")]
    merchant_id: String,
    #[schema(format = DateTime)]
    created_at: String,
    data: EventData,
}

/// What an event is about.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct EventData {
    /// The payment or refund as `GET` rendered it right after the change.
    object: EventObject,
}

/// A payment or a refund.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub(crate) enum EventObject {
    /// For `payment.*` events.
    Payment(atomic_core::event::PaymentView),
    /// For `refund.*` events.
    Refund(atomic_core::event::RefundView),
}

/// A page of items: `{"items": [...], "hasMore": bool}`.
#[derive(Serialize, ToSchema)]
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

    /// Views of a page, where making a view may fail.
    pub(crate) fn try_of<U, E>(
        page: &Page<U>,
        view: impl Fn(&U) -> Result<T, E>,
    ) -> Result<Self, E> {
        Ok(Self {
            items: page.items.iter().map(view).collect::<Result<_, _>>()?,
            has_more: page.has_more,
        })
    }
}
