//! The metrics Atomic reports (API.md, "Operations"), recorded through the `metrics` facade
//! where each fact is decided: a payment or refund stored, a settlement written, an
//! idempotent write replayed, a webhook attempt recorded, the sweep's look at the backlog.
//! The core only calls the facade; the application installs a recorder (the server's is
//! Prometheus) and, with none installed, every call is a no-op. [`names`] is the whole
//! catalogue, including what the HTTP layer and the server record, and [`describe`] gives
//! each its help text.
//!
//! Label values are fixed sets of `&'static str` (statuses, reasons, outcomes), so recording
//! allocates nothing for the label values and a series' count stays bounded.

use std::time::Duration;

use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge};

use crate::payment::{CaptureMethod, Payment, PaymentStatus};
use crate::ports::OpenPayments;
use crate::refund::RefundStatus;
use crate::time::Timestamp;
use crate::webhook::{DeliveryStatus, WebhookDelivery};

/// Every metric's name, Prometheus style.
pub mod names {
    /// Counter `{method, route, status}`: HTTP requests answered (route: the matched template).
    pub const HTTP_REQUESTS: &str = "atomic_http_requests_total";
    /// Histogram `{method, route}`: seconds from a request's arrival to its answer.
    pub const HTTP_REQUEST_DURATION: &str = "atomic_http_request_duration_seconds";
    /// Counter `{capture_method}`: payments stored.
    pub const PAYMENTS_CREATED: &str = "atomic_payments_created_total";
    /// Counter `{status, reason}`: payments that reached `SUCCESS`, `FAILED` or `CANCELED`.
    pub const PAYMENTS_FINISHED: &str = "atomic_payments_finished_total";
    /// Counter: refunds stored.
    pub const REFUNDS_CREATED: &str = "atomic_refunds_created_total";
    /// Counter `{status}`: refunds that reached `SUCCESS` or `FAILED`.
    pub const REFUNDS_FINISHED: &str = "atomic_refunds_finished_total";
    /// Histogram: jobs a worker loop settled together.
    pub const SETTLEMENT_BATCH_SIZE: &str = "atomic_settlement_batch_size";
    /// Histogram: seconds a worker loop took over one batch, claim to settlement.
    pub const SETTLEMENT_DURATION: &str = "atomic_settlement_duration_seconds";
    /// Gauge: payments `PENDING` or `PROCESSING`, as the last sweep saw them.
    pub const OPEN_PAYMENTS: &str = "atomic_open_payments";
    /// Gauge: seconds the oldest open payment has waited, as the last sweep saw it.
    pub const OLDEST_OPEN_PAYMENT_AGE: &str = "atomic_oldest_open_payment_age_seconds";
    /// Counter `{outcome}`: webhook attempts recorded (`delivered`, `failed_attempt`: to be
    /// retried, `failed`: no attempt left).
    pub const WEBHOOK_DELIVERIES: &str = "atomic_webhook_deliveries_total";
    /// Counter: idempotent writes answered from a kept response.
    pub const IDEMPOTENCY_REPLAYS: &str = "atomic_idempotency_replays_total";
    /// Counter `{policy}`: requests refused by a rate limiter.
    pub const RATE_LIMITED: &str = "atomic_rate_limited_total";
    /// Gauge `{state}`: database pool connections `idle` and `in_use`.
    pub const DB_POOL_CONNECTIONS: &str = "atomic_db_pool_connections";
    /// Histogram `{statement}`: requests one group-commit statement carried together
    /// (`insert`: payments with their idempotency keys, `claim`: claims that read a taken key).
    pub const DB_GROUP_SIZE: &str = "atomic_db_group_size";
}

/// Registers every metric's help text and unit with the installed recorder. Call it once,
/// after installing the recorder.
pub fn describe() {
    describe_requests();
    describe_money();
    describe_stores();
}

/// The HTTP layer's metrics: requests, their time, and rate limits.
fn describe_requests() {
    use names::*;
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests answered, by method, matched route and status"
    );
    describe_histogram!(
        HTTP_REQUEST_DURATION,
        Unit::Seconds,
        "Time from a request's arrival to its answer, by method and matched route"
    );
    describe_counter!(
        IDEMPOTENCY_REPLAYS,
        "Idempotent writes answered from a kept response"
    );
    describe_counter!(
        RATE_LIMITED,
        "Requests refused by a rate limiter, by policy"
    );
}

/// The money path's metrics: payments and refunds stored and finished, and settlement.
fn describe_money() {
    use names::*;
    describe_counter!(PAYMENTS_CREATED, "Payments stored, by capture method");
    describe_counter!(
        PAYMENTS_FINISHED,
        "Payments that reached SUCCESS, FAILED or CANCELED, by status and reason"
    );
    describe_counter!(REFUNDS_CREATED, "Refunds stored");
    describe_counter!(
        REFUNDS_FINISHED,
        "Refunds that reached SUCCESS or FAILED, by status"
    );
    describe_histogram!(
        SETTLEMENT_BATCH_SIZE,
        Unit::Count,
        "Jobs a worker loop settled together"
    );
    describe_histogram!(
        SETTLEMENT_DURATION,
        Unit::Seconds,
        "Time a worker loop took over one batch, claim to settlement"
    );
    describe_gauge!(
        OPEN_PAYMENTS,
        "Payments PENDING or PROCESSING at the last sweep"
    );
    describe_gauge!(
        OLDEST_OPEN_PAYMENT_AGE,
        Unit::Seconds,
        "How long the oldest open payment had waited at the last sweep"
    );
}

/// The outbound and storage metrics: webhook attempts, the database pool and group commit.
fn describe_stores() {
    use names::*;
    describe_counter!(
        WEBHOOK_DELIVERIES,
        "Webhook attempts recorded, by outcome (delivered, failed_attempt, failed)"
    );
    describe_gauge!(
        DB_POOL_CONNECTIONS,
        "Database pool connections, by state (idle, in_use)"
    );
    describe_histogram!(
        DB_GROUP_SIZE,
        Unit::Count,
        "Requests one group-commit statement carried together, by statement (claim, insert)"
    );
}

/// A group-commit writer of an adapter wrote `size` requests of `statement` (a fixed name
/// per statement kind) with one statement.
pub fn group_written(statement: &'static str, size: usize) {
    metrics::histogram!(names::DB_GROUP_SIZE, "statement" => statement).record(size as f64);
}

/// A payment was stored.
pub(crate) fn payment_created(capture_method: CaptureMethod) {
    counter!(names::PAYMENTS_CREATED, "capture_method" => capture_method.as_str()).increment(1);
}

/// A payment now stands as written; counted if that is an end (`SUCCESS`, `FAILED`,
/// `CANCELED`). The reason is the failure or cancellation reason, `none` for a success.
pub(crate) fn payment_written(payment: &Payment) {
    let status = payment.status();
    if !matches!(
        status,
        PaymentStatus::Success | PaymentStatus::Failed | PaymentStatus::Canceled
    ) {
        return;
    }
    let reason = payment
        .failure_reason()
        .map(|r| r.as_str())
        .or_else(|| payment.cancellation_reason().map(|r| r.as_str()))
        .unwrap_or("none");
    counter!(names::PAYMENTS_FINISHED, "status" => status.as_str(), "reason" => reason)
        .increment(1);
}

/// A refund was stored.
pub(crate) fn refund_created() {
    counter!(names::REFUNDS_CREATED).increment(1);
}

/// A refund now stands as written; counted if that is an end.
pub(crate) fn refund_written(status: RefundStatus) {
    if matches!(status, RefundStatus::Success | RefundStatus::Failed) {
        counter!(names::REFUNDS_FINISHED, "status" => status.as_str()).increment(1);
    }
}

/// A worker loop processed a batch of `size` jobs in `took`.
pub(crate) fn settlement_batch(size: usize, took: Duration) {
    metrics::histogram!(names::SETTLEMENT_BATCH_SIZE).record(size as f64);
    metrics::histogram!(names::SETTLEMENT_DURATION).record(took.as_secs_f64());
}

/// The backlog as the sweep saw it at `now`.
pub(crate) fn open_payments(open: OpenPayments, now: Timestamp) {
    gauge!(names::OPEN_PAYMENTS).set(open.count as f64);
    let age = open
        .oldest
        .map_or(Duration::ZERO, |oldest| now.duration_since(oldest));
    gauge!(names::OLDEST_OPEN_PAYMENT_AGE).set(age.as_secs_f64());
}

/// Attempts whose outcome was written: one count per delivery, by where it now stands.
pub(crate) fn webhook_attempts(deliveries: &[WebhookDelivery]) {
    for delivery in deliveries {
        let outcome = match delivery.status {
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Pending => "failed_attempt",
            DeliveryStatus::Failed => "failed",
        };
        counter!(names::WEBHOOK_DELIVERIES, "outcome" => outcome).increment(1);
    }
}

/// An idempotent write was answered from its kept response.
pub(crate) fn idempotency_replay() {
    counter!(names::IDEMPOTENCY_REPLAYS).increment(1);
}
