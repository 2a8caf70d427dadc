//! [`PaymentStore`] on [`PgStore`]: payments and refunds as requests write and read them.
//! Decisions are single compare-and-set statements (`UPDATE … WHERE status = … RETURNING`) in
//! the transaction that completes the request's idempotency claim; when the compare misses,
//! one read of the row says why (`InvalidState` with the status found, or the amount). A
//! cancel writes its event in the same transaction.

use std::time::Duration;

use async_trait::async_trait;
use atomic_core::error::Invariant;
use atomic_core::event::Event;
use atomic_core::id::{PaymentId, RefundId};
use atomic_core::idempotency::Completion;
use atomic_core::money::Amount;
use atomic_core::page::{CreatedRange, Page, PageRequest};
use atomic_core::payment::{CancellationReason, Payment, PaymentStatus};
use atomic_core::ports::{PaymentFilter, PaymentStore, RefundFilter};
use atomic_core::principal::Principal;
use atomic_core::refund::Refund;
use atomic_core::time::Timestamp;
use atomic_core::{Error, Fresh, Result};
use sqlx::{PgConnection, Postgres, Row, Transaction};

use crate::accounts::limit_plus_one;
use crate::error::from_sqlx;
use crate::events::write_events;
use crate::idempotency::complete_in;
use crate::rows::{
    self, filter_json, metadata_json, micros, owner_uuid, payment_columns, refund_columns,
    viewer_merchant,
};
use crate::store::PgStore;

const SELECT_PAYMENT: &str = concat!(
    "SELECT ",
    payment_columns!(),
    " FROM payments WHERE id = $1 AND ($2::uuid IS NULL OR owner_merchant = $2)"
);

const SELECT_REFUND: &str = concat!(
    "SELECT ",
    refund_columns!(),
    " FROM refunds WHERE id = $1 AND ($2::uuid IS NULL OR owner_merchant = $2)"
);

// A page of payments, newest first: $1 cursor, $2 limit, $3 viewer's merchant (NULL: all),
// $4 status, [$5, $6) created range, $7 metadata filter (a JSON object). Run unprepared, so
// each is planned with its values and an absent filter drops out of the plan: a merchant's
// page walks `payments_owner`, an open status `payments_owner_open`, a metadata filter the GIN
// index `payments_metadata` (its predicate `metadata <> '{}'` is repeated for the planner: no
// empty metadata matches a filter), a narrow created range `payments_owner_created`.
const LIST_PAYMENTS: &str = concat!(
    "SELECT ",
    payment_columns!(),
    " FROM payments WHERE ($1::uuid IS NULL OR id < $1) \
     AND ($3::uuid IS NULL OR owner_merchant = $3) \
     AND ($4::text IS NULL OR status = $4) \
     AND ($5::timestamptz IS NULL OR created_at >= $5) \
     AND ($6::timestamptz IS NULL OR created_at < $6) \
     AND ($7::jsonb IS NULL OR (metadata @> $7::jsonb AND metadata <> '{}'::jsonb)) \
     ORDER BY id DESC LIMIT $2"
);

// LIST_PAYMENTS for a merchant's created range that holds fewer rows than are newer than it
// (RANGE_IS_NARROW). The newest-first walk of the primary key would read every newer row
// before the first match (the planner assumes matches spread evenly along the ids; with
// UUIDv7 ids they sit together), so the page is taken from the range itself: the ids of the
// range from `payments_owner_created` (index only), the page's by a top-N sort (on the id's
// canonical text, whose byte order is the id's, so no index offers that order to walk), then
// those rows.
const LIST_PAYMENTS_IN_RANGE: &str = concat!(
    "SELECT ",
    payment_columns!(),
    " FROM payments WHERE id IN (SELECT id FROM payments \
     WHERE owner_merchant = $3 AND ($1::uuid IS NULL OR id < $1) \
     AND ($4::text IS NULL OR status = $4) \
     AND ($5::timestamptz IS NULL OR created_at >= $5) \
     AND ($6::timestamptz IS NULL OR created_at < $6) \
     AND ($7::jsonb IS NULL OR (metadata @> $7::jsonb AND metadata <> '{}'::jsonb)) \
     ORDER BY id::text COLLATE \"C\" DESC LIMIT $2) \
     ORDER BY id DESC"
);

// Whether merchant $1's created range [$2, $3) holds fewer payments than are newer than it,
// counting at most 1,000 of each (index-only scans of `payments_owner_created`). A range
// that reaches the newest payments is never narrow: the walk finds its page at once.
const RANGE_IS_NARROW: &str = "SELECT \
     (SELECT count(*) FROM (SELECT 1 FROM payments WHERE owner_merchant = $1 \
         AND ($2::timestamptz IS NULL OR created_at >= $2) \
         AND ($3::timestamptz IS NULL OR created_at < $3) LIMIT 1000) i) \
     < (SELECT count(*) FROM (SELECT 1 FROM payments WHERE owner_merchant = $1 \
         AND $3::timestamptz IS NOT NULL AND created_at >= $3 LIMIT 1000) n) AS narrow";

// As RANGE_IS_NARROW, for a merchant's refunds (`refunds_owner_created`).
const REFUND_RANGE_IS_NARROW: &str = "SELECT \
     (SELECT count(*) FROM (SELECT 1 FROM refunds WHERE owner_merchant = $1 \
         AND ($2::timestamptz IS NULL OR created_at >= $2) \
         AND ($3::timestamptz IS NULL OR created_at < $3) LIMIT 1000) i) \
     < (SELECT count(*) FROM (SELECT 1 FROM refunds WHERE owner_merchant = $1 \
         AND $3::timestamptz IS NOT NULL AND created_at >= $3 LIMIT 1000) n) AS narrow";

// As LIST_PAYMENTS_IN_RANGE, for refunds.
const LIST_REFUNDS_IN_RANGE: &str = concat!(
    "SELECT ",
    refund_columns!(),
    " FROM refunds WHERE id IN (SELECT id FROM refunds \
     WHERE owner_merchant = $3 AND ($1::uuid IS NULL OR id < $1) \
     AND ($4::text IS NULL OR status = $4) \
     AND ($5::timestamptz IS NULL OR created_at >= $5) \
     AND ($6::timestamptz IS NULL OR created_at < $6) \
     AND ($7::jsonb IS NULL OR (metadata @> $7::jsonb AND metadata <> '{}'::jsonb)) \
     AND ($8::uuid IS NULL OR payment_id = $8) \
     ORDER BY id::text COLLATE \"C\" DESC LIMIT $2) \
     ORDER BY id DESC"
);

// As LIST_PAYMENTS, for refunds; $8 the payment.
const LIST_REFUNDS: &str = concat!(
    "SELECT ",
    refund_columns!(),
    " FROM refunds WHERE ($1::uuid IS NULL OR id < $1) \
     AND ($3::uuid IS NULL OR owner_merchant = $3) \
     AND ($4::text IS NULL OR status = $4) \
     AND ($5::timestamptz IS NULL OR created_at >= $5) \
     AND ($6::timestamptz IS NULL OR created_at < $6) \
     AND ($7::jsonb IS NULL OR (metadata @> $7::jsonb AND metadata <> '{}'::jsonb)) \
     AND ($8::uuid IS NULL OR payment_id = $8) \
     ORDER BY id DESC LIMIT $2"
);

// AUTHORIZED -> PROCESSING to capture $2, while the authorization ($3 microseconds) lasts and
// the amount is within it. Nobody holds it until a worker claims it.
const REQUEST_CAPTURE: &str = concat!(
    "UPDATE payments SET status = 'PROCESSING', capture_requested = $2, touched_at = now(), \
     updated_at = $4 \
     WHERE id = $1 AND status = 'AUTHORIZED' AND $2 <= amount \
     AND updated_at > now() - $3 * interval '1 microsecond' RETURNING ",
    payment_columns!()
);

// AUTHORIZED -> CANCELED for reason $2.
const CANCEL: &str = concat!(
    "UPDATE payments SET status = 'CANCELED', cancellation_reason = $2, updated_at = $3 \
     WHERE id = $1 AND status = 'AUTHORIZED' RETURNING ",
    payment_columns!()
);

// Reserves $2 of payment $1's captured amount for a new refund: only while SUCCESS, only what
// is left. The CHECK `payments_refunds_within_captured` says the same; the row lock this takes
// makes concurrent reservations of one payment wait for each other.
/// Reservations tried before a refund that keeps missing is refused.
const RESERVE_ATTEMPTS: usize = 3;

const RESERVE_REFUND: &str = "UPDATE payments SET amount_reserved = amount_reserved + $2, \
     updated_at = now() \
     WHERE id = $1 AND status = 'SUCCESS' AND amount_reserved + $2 <= amount_captured";

const INSERT_REFUND: &str = "\
INSERT INTO refunds (id, payment_id, merchant_account, funding_account, owner_merchant, amount,
    currency, reason, status, metadata, idempotency_key, idempotency_token, created_by,
    touched_at, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'PENDING', $9::jsonb, $10, $11, $12, now(), $13, $13)";

/// Why a compare-and-set on payment `id` missed: not found, or the state it is in.
async fn missed(conn: &mut PgConnection, id: PaymentId) -> Result<Payment> {
    let row = sqlx::query(SELECT_PAYMENT)
        .bind(id.as_uuid())
        .bind(None::<uuid::Uuid>)
        .fetch_optional(conn)
        .await
        .map_err(from_sqlx)?
        .ok_or(Error::NotFound)?;
    rows::payment(&row)
}

/// Runs a payment decision (`sql` with $1 the payment and `bind` adding the rest) and its
/// completion in one transaction; `why` turns a missed compare into the caller's error.
async fn decide<'q>(
    tx: &mut Transaction<'static, Postgres>,
    query: sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>,
    id: PaymentId,
    why: impl FnOnce(Payment) -> Error,
) -> Result<Payment> {
    match query.fetch_optional(&mut **tx).await.map_err(from_sqlx)? {
        Some(row) => rows::payment(&row),
        None => Err(why(missed(tx, id).await?)),
    }
}

// Payment $1 as it stands, and whether its authorization is younger than $2 microseconds.
const CAPTURE_STATE: &str = concat!(
    "SELECT updated_at > now() - $2 * interval '1 microsecond' AS fresh, ",
    payment_columns!(),
    " FROM payments WHERE id = $1"
);

/// Why a capture's compare-and-set missed: not found; not AUTHORIZED, or expired (both
/// `InvalidState`); or more than was authorized.
async fn capture_missed(
    conn: &mut PgConnection,
    id: PaymentId,
    amount: Amount,
    authorization_ttl: Duration,
) -> Error {
    let found = sqlx::query(CAPTURE_STATE)
        .bind(id.as_uuid())
        .bind(micros(authorization_ttl))
        .fetch_optional(conn)
        .await
        .map_err(from_sqlx);
    let row = match found {
        Ok(Some(row)) => row,
        Ok(None) => return Error::NotFound,
        Err(error) => return error,
    };
    let fresh = row.try_get::<bool, _>("fresh").map_err(from_sqlx);
    match (rows::payment(&row), fresh) {
        (Ok(p), Ok(true)) if p.status() == PaymentStatus::Authorized && amount > p.amount => {
            Error::AmountExceedsCapturable
        }
        (Ok(p), Ok(_)) => invalid_state(&p),
        (Err(error), _) | (_, Err(error)) => error,
    }
}

fn invalid_state(payment: &Payment) -> Error {
    Error::InvalidState {
        status: payment.status(),
    }
}

impl PgStore {
    /// Whether the rows of `owner` in `created` are fewer than those newer than it (`sql`:
    /// [`RANGE_IS_NARROW`] or its like, $1 the owner, $2 and $3 the range); `false` without a
    /// range.
    pub(crate) async fn narrow_range(
        &self,
        sql: &'static str,
        owner: uuid::Uuid,
        created: CreatedRange,
    ) -> Result<bool> {
        if created.gte.is_none() && created.lt.is_none() {
            return Ok(false);
        }
        sqlx::query_scalar(sql)
            .persistent(false)
            .bind(owner)
            .bind(created.gte.map(|t| t.as_datetime()))
            .bind(created.lt.map(|t| t.as_datetime()))
            .fetch_one(self.pool())
            .await
            .map_err(from_sqlx)
    }

    /// Reserves the refund's amount and stores it, in the caller's transaction.
    async fn reserve_and_insert(
        tx: &mut Transaction<'static, Postgres>,
        refund: &Refund,
    ) -> Result<()> {
        // A miss is explained by a second read, which may see a payment that became SUCCESS
        // after the UPDATE looked (a capture posting committing in between): then the
        // reservation is tried again, so the answer always matches one state of the payment.
        for _ in 0..RESERVE_ATTEMPTS {
            let reserved = sqlx::query(RESERVE_REFUND)
                .bind(refund.payment_id.as_uuid())
                .bind(refund.amount.minor_units())
                .execute(&mut **tx)
                .await
                .map_err(from_sqlx)?;
            if reserved.rows_affected() == 1 {
                return Self::insert_refund(tx, refund).await;
            }
            let payment = match missed(tx, refund.payment_id).await {
                Err(Error::NotFound) => return Err(Invariant::MissingReference.into()),
                other => other?,
            };
            if payment.status() != PaymentStatus::Success {
                return Err(invalid_state(&payment));
            }
            if refund.amount.minor_units() > payment.refundable() {
                return Err(Error::AmountExceedsRefundable);
            }
        }
        Err(Error::AmountExceedsRefundable)
    }

    async fn insert_refund(tx: &mut Transaction<'static, Postgres>, refund: &Refund) -> Result<()> {
        sqlx::query(INSERT_REFUND)
            .bind(refund.id.as_uuid())
            .bind(refund.payment_id.as_uuid())
            .bind(refund.merchant_account.as_uuid())
            .bind(refund.funding_account.as_uuid())
            .bind(owner_uuid(refund.owner))
            .bind(refund.amount.minor_units())
            .bind(refund.currency.as_str())
            .bind(refund.reason.map(|r| r.as_str()))
            .bind(metadata_json(&refund.metadata))
            .bind(refund.idempotency_key.as_ref().map(|k| k.as_str()))
            .bind(None::<uuid::Uuid>)
            .bind(viewer_merchant(refund.created_by))
            .bind(refund.created_at.as_datetime())
            .execute(&mut **tx)
            .await
            .map_err(from_sqlx)?;
        Ok(())
    }
}

#[async_trait]
impl PaymentStore for PgStore {
    async fn create_payment(
        &self,
        payment: &Fresh<Payment>,
        completion: Option<Completion>,
    ) -> Result<()> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let insert = crate::accept::Insert {
            payment: Payment::clone(payment),
            completion,
            answer,
        };
        match self.accepts() {
            // Group commit: one statement (and one commit) for all concurrent inserts. Not
            // under `call`: a timeout must not abandon an insert a writer may still commit.
            Some(accepts) => {
                crate::group::submit(accepts, insert, answered, self.call_timeout()).await
            }
            None => {
                self.call(crate::accept::write_one(self.pool(), &insert))
                    .await
            }
        }
    }

    async fn payment(&self, id: PaymentId, viewer: Principal) -> Result<Option<Payment>> {
        self.call(async {
            let row = sqlx::query(SELECT_PAYMENT)
                .bind(id.as_uuid())
                .bind(viewer_merchant(viewer))
                .fetch_optional(self.pool())
                .await
                .map_err(from_sqlx)?;
            row.as_ref().map(rows::payment).transpose()
        })
        .await
    }

    async fn payments(
        &self,
        viewer: Principal,
        filter: &PaymentFilter,
        page: PageRequest<PaymentId>,
    ) -> Result<Page<Payment>> {
        self.call(async {
            let merchant = viewer_merchant(viewer);
            let cursor = page.starting_after.map(|c| c.as_uuid());
            self.check_cursor(
                "SELECT 1 FROM payments WHERE id = $1 AND ($2::uuid IS NULL OR owner_merchant = $2)",
                cursor,
                merchant,
            )
            .await?;
            let sql = match merchant {
                Some(owner) if self.narrow_range(RANGE_IS_NARROW, owner, filter.created).await? => {
                    LIST_PAYMENTS_IN_RANGE
                }
                _ => LIST_PAYMENTS,
            };
            let found = sqlx::query(sql)
                .persistent(false)
                .bind(cursor)
                .bind(limit_plus_one(page.limit.get()))
                .bind(merchant)
                .bind(filter.status.map(|s| s.as_str()))
                .bind(filter.created.gte.map(|t| t.as_datetime()))
                .bind(filter.created.lt.map(|t| t.as_datetime()))
                .bind(filter_json(&filter.metadata))
                .fetch_all(self.pool())
                .await
                .map_err(from_sqlx)?;
            let items = found
                .iter()
                .map(rows::payment)
                .collect::<Result<Vec<_>>>()?;
            Ok(Page::from_overfetch(items, page.limit))
        })
        .await
    }

    async fn request_capture(
        &self,
        id: PaymentId,
        amount: Amount,
        at: Timestamp,
        authorization_ttl: Duration,
        completion: Option<Completion>,
    ) -> Result<Payment> {
        self.call(async {
            let mut tx = self.begin().await?;
            let captured = sqlx::query(REQUEST_CAPTURE)
                .bind(id.as_uuid())
                .bind(amount.minor_units())
                .bind(micros(authorization_ttl))
                .bind(at.as_datetime())
                .fetch_optional(&mut *tx)
                .await
                .map_err(from_sqlx)?;
            let payment = match captured {
                Some(row) => rows::payment(&row)?,
                None => return Err(capture_missed(&mut tx, id, amount, authorization_ttl).await),
            };
            if let Some(completion) = &completion {
                complete_in(&mut tx, completion).await?;
            }
            tx.commit().await.map_err(from_sqlx)?;
            Ok(payment)
        })
        .await
    }

    async fn cancel(
        &self,
        id: PaymentId,
        reason: CancellationReason,
        at: Timestamp,
        completion: Option<Completion>,
    ) -> Result<Payment> {
        self.call(async {
            let mut tx = self.begin().await?;
            let query = sqlx::query(CANCEL)
                .bind(id.as_uuid())
                .bind(reason.as_str())
                .bind(at.as_datetime());
            let payment = decide(&mut tx, query, id, |p| invalid_state(&p)).await?;
            write_events(&mut tx, Event::of_payment(&payment).as_slice()).await?;
            if let Some(completion) = &completion {
                complete_in(&mut tx, completion).await?;
            }
            tx.commit().await.map_err(from_sqlx)?;
            Ok(payment)
        })
        .await
    }

    async fn create_refund(
        &self,
        refund: &Fresh<Refund>,
        completion: Option<Completion>,
    ) -> Result<()> {
        self.call(async {
            let mut tx = self.begin().await?;
            Self::reserve_and_insert(&mut tx, refund).await?;
            if let Some(completion) = &completion {
                complete_in(&mut tx, completion).await?;
            }
            tx.commit().await.map_err(from_sqlx)
        })
        .await
    }

    async fn refund(&self, id: RefundId, viewer: Principal) -> Result<Option<Refund>> {
        self.call(async {
            let row = sqlx::query(SELECT_REFUND)
                .bind(id.as_uuid())
                .bind(viewer_merchant(viewer))
                .fetch_optional(self.pool())
                .await
                .map_err(from_sqlx)?;
            row.as_ref().map(rows::refund).transpose()
        })
        .await
    }

    async fn refunds(
        &self,
        viewer: Principal,
        filter: &RefundFilter,
        page: PageRequest<RefundId>,
    ) -> Result<Page<Refund>> {
        self.call(async {
            let merchant = viewer_merchant(viewer);
            let cursor = page.starting_after.map(|c| c.as_uuid());
            self.check_cursor(
                "SELECT 1 FROM refunds WHERE id = $1 AND ($2::uuid IS NULL OR owner_merchant = $2)",
                cursor,
                merchant,
            )
            .await?;
            // A refunds list of one payment is small: its own index serves it.
            let narrow = match merchant {
                Some(owner) if filter.payment.is_none() => {
                    self.narrow_range(REFUND_RANGE_IS_NARROW, owner, filter.created)
                        .await?
                }
                _ => false,
            };
            let sql = if narrow {
                LIST_REFUNDS_IN_RANGE
            } else {
                LIST_REFUNDS
            };
            let found = sqlx::query(sql)
                .persistent(false)
                .bind(cursor)
                .bind(limit_plus_one(page.limit.get()))
                .bind(merchant)
                .bind(filter.status.map(|s| s.as_str()))
                .bind(filter.created.gte.map(|t| t.as_datetime()))
                .bind(filter.created.lt.map(|t| t.as_datetime()))
                .bind(filter_json(&filter.metadata))
                .bind(filter.payment.map(|p| p.as_uuid()))
                .fetch_all(self.pool())
                .await
                .map_err(from_sqlx)?;
            let items = found.iter().map(rows::refund).collect::<Result<Vec<_>>>()?;
            Ok(Page::from_overfetch(items, page.limit))
        })
        .await
    }
}
