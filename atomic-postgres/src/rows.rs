//! Turning rows into core types and core values into bind parameters. A row the core's types
//! refuse is reported as a backend error, never unwrapped.

use std::time::Duration;

use atomic_core::account::{Account, AccountKind, AccountName};
use atomic_core::api_key::{ApiKey, KeyHash};
use atomic_core::event::{Event, EventType};
use atomic_core::idempotency::IdempotencyKey;
use atomic_core::ledger::{Direction, Entry};
use atomic_core::merchant::{Merchant, MerchantName};
use atomic_core::metadata::{Metadata, MetadataFilter};
use atomic_core::money::{Amount, Balance, Currency};
use atomic_core::payment::{
    CancellationReason, CaptureMethod, CardSource, Description, FailureReason, Payment,
    PaymentParts, PaymentState, PaymentStatus, StateParts,
};
use atomic_core::principal::{Owner, Principal};
use atomic_core::refund::{
    Refund, RefundFailureReason, RefundParts, RefundReason, RefundState, RefundStatus,
};
use atomic_core::time::Timestamp;
use atomic_core::webhook::{
    DeliveryStatus, Subscription, WebhookDelivery, WebhookEndpoint, WebhookUrl,
};
use atomic_core::{Error, Result};
use atomic_webhook_signature::Secret;
use sqlx::Row;
use sqlx::postgres::PgRow;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::{corrupt, from_sqlx};

// Column lists as macros so queries are assembled at compile time with `concat!`: no SQL is
// ever built at run time.

/// The payment columns every payment query selects.
macro_rules! payment_columns {
    () => {
        "id, merchant_account, funding_account, owner_merchant, amount, currency, source, \
         description, capture_method, metadata::text AS metadata, idempotency_key, created_by, \
         status, failure_reason, cancellation_reason, capture_requested, amount_captured, \
         amount_reserved, amount_refunded, created_at, updated_at"
    };
}

/// The refund columns every refund query selects.
macro_rules! refund_columns {
    () => {
        "id, payment_id, merchant_account, funding_account, owner_merchant, amount, currency, \
         reason, metadata::text AS metadata, idempotency_key, created_by, status, \
         failure_reason, created_at, updated_at"
    };
}

/// The account columns every account query selects.
macro_rules! account_columns {
    () => {
        "id, name, currency, kind, owner_merchant, balance, created_at"
    };
}

/// The entry columns every entry query selects.
macro_rules! entry_columns {
    () => {
        "id, transaction_id, payment_id, refund_id, account_id, direction, amount, created_at"
    };
}

/// The API key columns every key query selects.
macro_rules! api_key_columns {
    () => {
        "id, merchant_id, prefix, hash, created_at, revoked_at"
    };
}

/// The event columns every event query selects.
macro_rules! event_columns {
    () => {
        "id, type, merchant_account, owner_merchant, payment_id, refund_id, created_at, body"
    };
}

/// The endpoint columns every endpoint query selects.
macro_rules! endpoint_columns {
    () => {
        "id, owner_merchant, url, events, description, secret, created_at"
    };
}

/// The delivery columns every delivery query selects.
macro_rules! delivery_columns {
    () => {
        "id, event_id, endpoint_id, status, attempts, failures, last_attempt_at, \
         last_status_code, last_error, next_attempt_at, resume_at, manual, created_at"
    };
}

pub(crate) use {
    account_columns, api_key_columns, delivery_columns, endpoint_columns, entry_columns,
    event_columns, payment_columns, refund_columns,
};

fn get<'r, T>(row: &'r PgRow, column: &str) -> Result<T>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    row.try_get(column).map_err(from_sqlx)
}

fn timestamp(row: &PgRow, column: &str) -> Result<Timestamp> {
    Ok(Timestamp::from_datetime(get::<OffsetDateTime>(
        row, column,
    )?))
}

pub(crate) fn optional_timestamp(row: &PgRow, column: &str) -> Result<Option<Timestamp>> {
    Ok(get::<Option<OffsetDateTime>>(row, column)?.map(Timestamp::from_datetime))
}

fn currency(row: &PgRow) -> Result<Currency> {
    Currency::parse(get::<String>(row, "currency")?.trim()).map_err(|_| corrupt("currency"))
}

/// The stored form of an owner: the merchant's id, or NULL for the platform.
pub(crate) fn owner_uuid(owner: Owner) -> Option<Uuid> {
    owner.merchant().map(|m| m.as_uuid())
}

pub(crate) fn owner(id: Option<Uuid>) -> Owner {
    id.map_or(Owner::Platform, |m| Owner::Merchant(m.into()))
}

/// The merchant a viewer is confined to; `None` for the platform, which sees everything.
pub(crate) fn viewer_merchant(viewer: Principal) -> Option<Uuid> {
    viewer.merchant().map(|m| m.as_uuid())
}

/// The stored scope of an idempotency key: the merchant's id, or the nil UUID for the platform.
pub(crate) fn scope_uuid(scope: Principal) -> Uuid {
    viewer_merchant(scope).unwrap_or(Uuid::nil())
}

/// A duration as whole microseconds for `$n * interval '1 microsecond'`, capped at ~100 years
/// so the database's timestamp arithmetic cannot overflow.
pub(crate) fn micros(duration: Duration) -> i64 {
    const CAP: i64 = 100 * 366 * 24 * 3600 * 1_000_000;
    i64::try_from(duration.as_micros()).map_or(CAP, |m| m.min(CAP))
}

/// Metadata as the JSON text bound to a `jsonb` parameter.
pub(crate) fn metadata_json(metadata: &Metadata) -> String {
    let object: serde_json::Map<String, serde_json::Value> = metadata
        .iter()
        .map(|(k, v)| (k.to_owned(), serde_json::Value::String(v.to_owned())))
        .collect();
    serde_json::Value::Object(object).to_string()
}

/// A metadata filter as the JSON object `metadata @> $n` matches; `None` when it filters
/// nothing.
pub(crate) fn filter_json(filter: &MetadataFilter) -> Option<String> {
    if filter.is_empty() {
        return None;
    }
    let object: serde_json::Map<String, serde_json::Value> = filter
        .pairs()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), serde_json::Value::String(v.clone())))
        .collect();
    Some(serde_json::Value::Object(object).to_string())
}

fn metadata(row: &PgRow) -> Result<Metadata> {
    let text: String = get(row, "metadata")?;
    let pairs: std::collections::BTreeMap<String, String> =
        serde_json::from_str(&text).map_err(|_| corrupt("metadata"))?;
    Metadata::new(pairs).map_err(|_| corrupt("metadata"))
}

fn idempotency_key(row: &PgRow) -> Result<Option<IdempotencyKey>> {
    get::<Option<String>>(row, "idempotency_key")?
        .map(|k| IdempotencyKey::parse(k).map_err(|_| corrupt("idempotency key")))
        .transpose()
}

fn created_by(row: &PgRow) -> Result<Principal> {
    Ok(get::<Option<Uuid>>(row, "created_by")?
        .map_or(Principal::Platform, |m| Principal::Merchant(m.into())))
}

fn amount(row: &PgRow, column: &str) -> Result<Amount> {
    Amount::new(get(row, column)?).map_err(|_| corrupt("amount"))
}

fn payment_state(row: &PgRow) -> Result<PaymentState> {
    let status = PaymentStatus::parse(&get::<String>(row, "status")?)
        .map_err(|_| corrupt("payment status"))?;
    let failure_reason = get::<Option<String>>(row, "failure_reason")?
        .map(|r| FailureReason::parse(&r).ok_or(corrupt("failure reason")))
        .transpose()?;
    let cancellation_reason = get::<Option<String>>(row, "cancellation_reason")?
        .map(|r| CancellationReason::parse(&r).ok_or(corrupt("cancellation reason")))
        .transpose()?;
    let capture_requested = get::<Option<i64>>(row, "capture_requested")?
        .map(|n| Amount::new(n).map_err(|_| corrupt("capture requested")))
        .transpose()?;
    PaymentState::from_parts(StateParts {
        status,
        failure_reason,
        cancellation_reason,
        capture_requested,
        amount_captured: get(row, "amount_captured")?,
    })
    .map_err(|_| corrupt("payment state"))
}

pub(crate) fn payment(row: &PgRow) -> Result<Payment> {
    Payment::restore(PaymentParts {
        id: get::<Uuid>(row, "id")?.into(),
        merchant_account: get::<Uuid>(row, "merchant_account")?.into(),
        funding_account: get::<Uuid>(row, "funding_account")?.into(),
        owner: owner(get(row, "owner_merchant")?),
        amount: amount(row, "amount")?,
        currency: currency(row)?,
        source: CardSource::parse(get::<String>(row, "source")?)
            .map_err(|_| corrupt("card source"))?,
        description: Description::parse(get::<String>(row, "description")?)
            .map_err(|_| corrupt("description"))?,
        capture_method: CaptureMethod::parse(&get::<String>(row, "capture_method")?)
            .map_err(|_| corrupt("capture method"))?,
        metadata: metadata(row)?,
        idempotency_key: idempotency_key(row)?,
        created_by: created_by(row)?,
        created_at: timestamp(row, "created_at")?,
        state: payment_state(row)?,
        amount_refunded: get(row, "amount_refunded")?,
        amount_reserved: get(row, "amount_reserved")?,
        updated_at: timestamp(row, "updated_at")?,
    })
    .map_err(|_| corrupt("payment counters"))
}

pub(crate) fn refund(row: &PgRow) -> Result<Refund> {
    let status = RefundStatus::parse(&get::<String>(row, "status")?)
        .map_err(|_| corrupt("refund status"))?;
    let failure_reason = get::<Option<String>>(row, "failure_reason")?
        .map(|r| RefundFailureReason::parse(&r).ok_or(corrupt("refund failure reason")))
        .transpose()?;
    let reason = get::<Option<String>>(row, "reason")?
        .map(|r| RefundReason::parse(&r).map_err(|_| corrupt("refund reason")))
        .transpose()?;
    Ok(Refund::restore(RefundParts {
        id: get::<Uuid>(row, "id")?.into(),
        payment_id: get::<Uuid>(row, "payment_id")?.into(),
        merchant_account: get::<Uuid>(row, "merchant_account")?.into(),
        funding_account: get::<Uuid>(row, "funding_account")?.into(),
        owner: owner(get(row, "owner_merchant")?),
        amount: amount(row, "amount")?,
        currency: currency(row)?,
        reason,
        metadata: metadata(row)?,
        idempotency_key: idempotency_key(row)?,
        created_by: created_by(row)?,
        created_at: timestamp(row, "created_at")?,
        state: RefundState::from_parts(status, failure_reason)
            .map_err(|_| corrupt("refund state"))?,
        updated_at: timestamp(row, "updated_at")?,
    }))
}

pub(crate) fn account(row: &PgRow) -> Result<Account> {
    Ok(Account {
        id: get::<Uuid>(row, "id")?.into(),
        name: AccountName::parse(get::<String>(row, "name")?)
            .map_err(|_| corrupt("account name"))?,
        currency: currency(row)?,
        owner: owner(get(row, "owner_merchant")?),
        kind: AccountKind::parse(&get::<String>(row, "kind")?).ok_or(corrupt("account kind"))?,
        balance: Balance::from_minor_units(get(row, "balance")?),
        created_at: timestamp(row, "created_at")?,
    })
}

pub(crate) fn entry(row: &PgRow) -> Result<Entry> {
    Ok(Entry {
        id: get::<Uuid>(row, "id")?.into(),
        transaction_id: get::<Uuid>(row, "transaction_id")?.into(),
        payment_id: get::<Uuid>(row, "payment_id")?.into(),
        refund_id: get::<Option<Uuid>>(row, "refund_id")?.map(Into::into),
        account_id: get::<Uuid>(row, "account_id")?.into(),
        direction: Direction::parse(&get::<String>(row, "direction")?)
            .ok_or(corrupt("entry direction"))?,
        amount: Amount::new(get(row, "amount")?).map_err(|_| corrupt("entry amount"))?,
        created_at: timestamp(row, "created_at")?,
    })
}

pub(crate) fn api_key(row: &PgRow) -> Result<ApiKey> {
    let hash: Vec<u8> = get(row, "hash")?;
    let hash: [u8; 32] = hash.try_into().map_err(|_| corrupt("key hash"))?;
    Ok(ApiKey {
        id: get::<Uuid>(row, "id")?.into(),
        merchant_id: get::<Uuid>(row, "merchant_id")?.into(),
        prefix: get(row, "prefix")?,
        hash: KeyHash::from_bytes(hash),
        created_at: timestamp(row, "created_at")?,
        revoked_at: get::<Option<OffsetDateTime>>(row, "revoked_at")?.map(Timestamp::from_datetime),
    })
}

pub(crate) fn merchant(row: &PgRow) -> Result<Merchant> {
    Ok(Merchant {
        id: get::<Uuid>(row, "id")?.into(),
        name: MerchantName::parse(get::<String>(row, "name")?)
            .map_err(|_| corrupt("merchant name"))?,
        primary_account: get::<Uuid>(row, "primary_account")?.into(),
        created_at: timestamp(row, "created_at")?,
    })
}

/// A count column as `u64` (counts are never negative).
pub(crate) fn count(row: &PgRow, column: &str) -> Result<u64> {
    u64::try_from(get::<i64>(row, column)?).map_err(|_| Error::backend("negative count"))
}

pub(crate) fn event(row: &PgRow) -> Result<Event> {
    Ok(Event {
        id: get::<Uuid>(row, "id")?.into(),
        event_type: EventType::parse(&get::<String>(row, "type")?)
            .map_err(|_| corrupt("event type"))?,
        merchant_account: get::<Uuid>(row, "merchant_account")?.into(),
        owner: owner(get(row, "owner_merchant")?),
        payment_id: get::<Uuid>(row, "payment_id")?.into(),
        refund_id: get::<Option<Uuid>>(row, "refund_id")?.map(Into::into),
        created_at: timestamp(row, "created_at")?,
        body: get(row, "body")?,
    })
}

pub(crate) fn endpoint(row: &PgRow) -> Result<WebhookEndpoint> {
    let events: Vec<String> = get(row, "events")?;
    Ok(WebhookEndpoint {
        id: get::<Uuid>(row, "id")?.into(),
        owner: owner(get(row, "owner_merchant")?),
        url: WebhookUrl::parse(&get::<String>(row, "url")?).map_err(|_| corrupt("endpoint url"))?,
        subscription: Subscription::parse(&events).map_err(|_| corrupt("endpoint events"))?,
        description: get::<Option<String>>(row, "description")?
            .map(|d| Description::parse(d).map_err(|_| corrupt("endpoint description")))
            .transpose()?,
        secret: Secret::parse(&get::<String>(row, "secret")?)
            .map_err(|_| corrupt("endpoint secret"))?,
        created_at: timestamp(row, "created_at")?,
    })
}

fn count_u32(row: &PgRow, column: &str) -> Result<u32> {
    u32::try_from(get::<i32>(row, column)?).map_err(|_| corrupt("delivery count"))
}

pub(crate) fn delivery(row: &PgRow) -> Result<WebhookDelivery> {
    Ok(WebhookDelivery {
        id: get::<Uuid>(row, "id")?.into(),
        event_id: get::<Uuid>(row, "event_id")?.into(),
        endpoint_id: get::<Uuid>(row, "endpoint_id")?.into(),
        status: DeliveryStatus::parse(&get::<String>(row, "status")?)
            .map_err(|_| corrupt("delivery status"))?,
        attempts: count_u32(row, "attempts")?,
        failures: count_u32(row, "failures")?,
        last_attempt_at: optional_timestamp(row, "last_attempt_at")?,
        last_status_code: get::<Option<i32>>(row, "last_status_code")?
            .map(|c| u16::try_from(c).map_err(|_| corrupt("delivery status code")))
            .transpose()?,
        last_error: get(row, "last_error")?,
        next_attempt_at: optional_timestamp(row, "next_attempt_at")?,
        resume_at: optional_timestamp(row, "resume_at")?,
        manual: get(row, "manual")?,
        created_at: timestamp(row, "created_at")?,
    })
}

/// Deliveries as one array per column, to bind to `unnest` (one statement for any number).
#[derive(Default)]
pub(crate) struct DeliveryColumns {
    pub(crate) ids: Vec<Uuid>,
    pub(crate) event_ids: Vec<Uuid>,
    pub(crate) endpoint_ids: Vec<Uuid>,
    pub(crate) statuses: Vec<&'static str>,
    pub(crate) attempts: Vec<i32>,
    pub(crate) failures: Vec<i32>,
    pub(crate) last_attempt_at: Vec<Option<OffsetDateTime>>,
    pub(crate) last_status_code: Vec<Option<i32>>,
    pub(crate) last_error: Vec<Option<String>>,
    pub(crate) next_attempt_at: Vec<Option<OffsetDateTime>>,
    pub(crate) resume_at: Vec<Option<OffsetDateTime>>,
    pub(crate) manual: Vec<bool>,
    pub(crate) created_at: Vec<OffsetDateTime>,
}

impl DeliveryColumns {
    /// The columns of `deliveries`, in order.
    pub(crate) fn of(deliveries: &[WebhookDelivery]) -> Result<Self> {
        let mut columns = Self::default();
        let count =
            |n: u32| i32::try_from(n).map_err(|_| Error::backend("delivery count overflow"));
        for d in deliveries {
            columns.ids.push(d.id.as_uuid());
            columns.event_ids.push(d.event_id.as_uuid());
            columns.endpoint_ids.push(d.endpoint_id.as_uuid());
            columns.statuses.push(d.status.as_str());
            columns.attempts.push(count(d.attempts)?);
            columns.failures.push(count(d.failures)?);
            columns
                .last_attempt_at
                .push(d.last_attempt_at.map(|t| t.as_datetime()));
            columns
                .last_status_code
                .push(d.last_status_code.map(i32::from));
            columns.last_error.push(d.last_error.clone());
            columns
                .next_attempt_at
                .push(d.next_attempt_at.map(|t| t.as_datetime()));
            columns.resume_at.push(d.resume_at.map(|t| t.as_datetime()));
            columns.manual.push(d.manual);
            columns.created_at.push(d.created_at.as_datetime());
        }
        Ok(columns)
    }
}
