//! [`SettlementStore`] on [`PgStore`]: claims (one compare-and-set statement per batch),
//! voids, releases, batched settlement ([`crate::ledger`]), the sweep of payments and refunds,
//! and the expiry of authorizations (with their `payment.canceled` events, in the same
//! transaction).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use atomic_core::event::Event;
use atomic_core::id::{PaymentId, RefundId};
use atomic_core::payment::{Payment, PaymentStatus};
use atomic_core::ports::{
    BeginOutcome, Job, LeaseId, OpenPayments, RefundBegin, SettleOutcome, Settlement,
    SettlementStore,
};
use atomic_core::refund::{Refund, RefundStatus};
use atomic_core::{Error, Result};
use sqlx::Row;
use sqlx::postgres::PgRow;
use uuid::Uuid;

use crate::error::from_sqlx;
use crate::events::write_events;
use crate::ledger::{BatchRefused, copy_error, error_for_each};
use crate::rows::{self, micros, payment_columns, refund_columns};
use crate::store::{PgStore, batch_query};

// The claim statements find their rows by primary key only. Their status tests are written as
// CASE so the planner cannot match them to the partial indexes of open rows: it estimated
// those indexes by their few live rows and scanned them whole for every batch (a bitmap AND
// with the primary key), but they hold dead entries until vacuum, and a bitmap scan never
// marks entries dead, so each batch read every row settled since the last vacuum
// (BENCHMARKS.md, run 4).

// Claims many payments and reads the batch back in ONE statement, so a claim is never taken
// without its answer: rows locked in id order (no deadlock between claimers), a compare-and-set
// to PROCESSING from PENDING, or of a PROCESSING payment nobody holds (a capture just asked,
// a lease run out); then the rows not claimed (`taken` false) as they stood.
pub(crate) const BEGIN_PAYMENTS: &str = concat!(
    "WITH claimed AS (UPDATE payments SET status = 'PROCESSING', lease_id = $2, \
     lease_until = now() + $3 * interval '1 microsecond', touched_at = now(), \
     updated_at = CASE WHEN status = 'PENDING' THEN now() ELSE updated_at END \
     WHERE id IN (SELECT id FROM payments WHERE id = ANY($1) \
         AND CASE status WHEN 'PENDING' THEN true \
             WHEN 'PROCESSING' THEN coalesce(lease_until <= now(), true) ELSE false END \
         ORDER BY id FOR NO KEY UPDATE) \
     AND CASE status WHEN 'PENDING' THEN true \
         WHEN 'PROCESSING' THEN coalesce(lease_until <= now(), true) ELSE false END \
     RETURNING voiding_attempt, ",
    payment_columns!(),
    ") SELECT true AS taken, voiding_attempt, ",
    payment_columns!(),
    " FROM claimed UNION ALL SELECT false AS taken, NULL::uuid, ",
    payment_columns!(),
    " FROM payments WHERE id = ANY(ARRAY(SELECT unnest($1::uuid[]) EXCEPT SELECT id FROM claimed))"
);

// The same for refunds: PENDING, or PROCESSING under a lease run out.
const BEGIN_REFUNDS: &str = concat!(
    "WITH claimed AS (UPDATE refunds SET status = 'PROCESSING', lease_id = $2, \
     lease_until = now() + $3 * interval '1 microsecond', touched_at = now(), \
     updated_at = CASE WHEN status = 'PENDING' THEN now() ELSE updated_at END \
     WHERE id IN (SELECT id FROM refunds WHERE id = ANY($1) \
         AND CASE status WHEN 'PENDING' THEN true \
             WHEN 'PROCESSING' THEN lease_until <= now() ELSE false END \
         ORDER BY id FOR NO KEY UPDATE) \
     AND CASE status WHEN 'PENDING' THEN true \
         WHEN 'PROCESSING' THEN lease_until <= now() ELSE false END \
     RETURNING ",
    refund_columns!(),
    ") SELECT true AS taken, ",
    refund_columns!(),
    " FROM claimed UNION ALL SELECT false AS taken, ",
    refund_columns!(),
    " FROM refunds WHERE id = ANY(ARRAY(SELECT unnest($1::uuid[]) EXCEPT SELECT id FROM claimed))"
);

// Ends every lease of a batch claim whose answer could not be read.
const RELEASE_PAYMENTS: &str = "UPDATE payments SET lease_until = now() \
     WHERE id = ANY($1) AND CASE status WHEN 'PROCESSING' THEN lease_id = $2 ELSE false END";
const RELEASE_REFUNDS: &str = "UPDATE refunds SET lease_until = now() \
     WHERE id = ANY($1) AND CASE status WHEN 'PROCESSING' THEN lease_id = $2 ELSE false END";

// Extends a held lease and marks the payment's charge as being voided, for good (the database
// then refuses SUCCESS for it: `payments_voided_only_fails`); the mark names the attempt.
const BEGIN_VOID: &str = "UPDATE payments SET lease_until = now() + $3 * interval '1 microsecond', \
     voiding_at = COALESCE(voiding_at, now()), voiding_attempt = COALESCE(voiding_attempt, $2) \
     WHERE id = $1 AND status = 'PROCESSING' AND lease_id = $2 AND lease_until > now()";

const SWEEP_PAYMENTS: &str = "\
UPDATE payments SET touched_at = now() WHERE id IN (
    SELECT id FROM payments
    WHERE status IN ('PENDING', 'PROCESSING')
      AND touched_at <= now() - $1 * interval '1 microsecond'
      AND (lease_until IS NULL OR lease_until <= now())
    ORDER BY touched_at LIMIT $2 FOR NO KEY UPDATE SKIP LOCKED)
RETURNING id";

const SWEEP_REFUNDS: &str = "\
UPDATE refunds SET touched_at = now() WHERE id IN (
    SELECT id FROM refunds
    WHERE status IN ('PENDING', 'PROCESSING')
      AND touched_at <= now() - $1 * interval '1 microsecond'
      AND (lease_until IS NULL OR lease_until <= now())
    ORDER BY touched_at LIMIT $2 FOR NO KEY UPDATE SKIP LOCKED)
RETURNING id";

// Cancels up to $2 authorizations older than $1 microseconds: one compare-and-set statement,
// so each is canceled once however many sweeps run. A row another transaction holds (a
// capture, a cancel, another sweep) is waited for, then tested again: one that changed no
// longer passes the status test and is left out, so when this returns every decision it
// raced with is committed.
/// The due authorizations are chosen once (a materialized CTE: its LIMIT holds however the
/// update is planned) and locked, waiting for a capture or cancel that holds one, so each is
/// canceled by exactly one caller, after every decision it raced with.
const EXPIRE: &str = concat!(
    "WITH due AS MATERIALIZED (SELECT id AS due_id FROM payments WHERE status = 'AUTHORIZED' \
         AND updated_at <= now() - $1 * interval '1 microsecond' \
         ORDER BY updated_at, id LIMIT $2 FOR NO KEY UPDATE) \
     UPDATE payments p SET status = 'CANCELED', cancellation_reason = 'expired', \
     updated_at = now() FROM due WHERE p.id = due.due_id \
     AND p.status = 'AUTHORIZED' AND p.updated_at <= now() - $1 * interval '1 microsecond' \
     RETURNING ",
    payment_columns!()
);

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The ids, each once, in their first order.
fn distinct(ids: &[Uuid]) -> Vec<Uuid> {
    let mut seen = HashSet::new();
    ids.iter().copied().filter(|id| seen.insert(*id)).collect()
}

/// A row this caller just claimed (with its `voiding_attempt`), as its outcome.
fn claimed_payment(row: &PgRow) -> Result<BeginOutcome> {
    let payment = rows::payment(row)?;
    let voiding: Option<Uuid> = row.try_get("voiding_attempt").map_err(from_sqlx)?;
    Ok(match voiding {
        Some(attempt) => BeginOutcome::Voiding {
            payment,
            attempt: LeaseId::from(attempt),
        },
        None => BeginOutcome::Claimed(payment),
    })
}

/// One outcome per id, in order, from the rows of `BEGIN_PAYMENTS`; an id given twice is
/// claimed once, and is `Busy` the second time (the caller already holds it).
fn payment_outcomes(ids: &[PaymentId], found: &[PgRow]) -> Result<Vec<BeginOutcome>> {
    let mut claimed = HashMap::new();
    let mut others: HashMap<PaymentId, Payment> = HashMap::new();
    for row in found {
        if row.try_get::<bool, _>("taken").map_err(from_sqlx)? {
            let id = PaymentId::from(row.try_get::<Uuid, _>("id").map_err(from_sqlx)?);
            claimed.insert(id, claimed_payment(row)?);
        } else {
            let payment = rows::payment(row)?;
            others.insert(payment.id, payment);
        }
    }
    Ok(ids
        .iter()
        .map(|id| match (claimed.remove(id), others.get(id)) {
            (Some(outcome), _) => outcome,
            (None, Some(p))
                if p.status().is_terminal() || p.status() == PaymentStatus::Authorized =>
            {
                BeginOutcome::Finished(p.clone())
            }
            (None, Some(_)) => BeginOutcome::Busy,
            (None, None) => BeginOutcome::Missing,
        })
        .collect())
}

/// As [`payment_outcomes`], for refunds.
fn refund_outcomes(ids: &[RefundId], found: &[PgRow]) -> Result<Vec<RefundBegin>> {
    let mut claimed: HashMap<RefundId, Refund> = HashMap::new();
    let mut others: HashMap<RefundId, Refund> = HashMap::new();
    let mut known = HashSet::new();
    for row in found {
        let refund = rows::refund(row)?;
        known.insert(refund.id);
        if row.try_get::<bool, _>("taken").map_err(from_sqlx)? {
            claimed.insert(refund.id, refund);
        } else {
            others.insert(refund.id, refund);
        }
    }
    Ok(ids
        .iter()
        .map(|id| match (claimed.remove(id), others.get(id)) {
            (Some(refund), _) => RefundBegin::Claimed(refund),
            (None, Some(r))
                if matches!(r.status(), RefundStatus::Success | RefundStatus::Failed) =>
            {
                RefundBegin::Finished(r.clone())
            }
            (None, _) if known.contains(id) => RefundBegin::Busy,
            (None, _) => RefundBegin::Missing,
        })
        .collect())
}

impl PgStore {
    /// Runs a batch claim (`sql`: $1 ids, $2 lease, $3 microseconds) and reads its rows with
    /// `read`; when they cannot be read, ends the leases taken (`release`) so the jobs come
    /// back with their next delivery rather than after the lease.
    async fn claim<T>(
        &self,
        (sql, release): (&'static str, &'static str),
        ids: &[Uuid],
        lease: LeaseId,
        duration: Duration,
        read: impl FnOnce(&[PgRow]) -> Result<Vec<T>>,
    ) -> Result<Vec<T>> {
        let unique = distinct(ids);
        self.call(async {
            let found = batch_query(sql)
                .bind(&unique)
                .bind(lease.as_uuid())
                .bind(micros(duration))
                .fetch_all(self.pool())
                .await
                .map_err(from_sqlx)?;
            let outcomes = read(&found);
            if outcomes.is_err() {
                let released = sqlx::query(release)
                    .bind(&unique)
                    .bind(lease.as_uuid())
                    .execute(self.pool())
                    .await;
                if let Err(error) = released {
                    tracing::warn!(?error, "releasing an unreadable batch claim failed");
                }
            }
            outcomes
        })
        .await
    }

    /// Settles each alone, in its own transaction: the fallback of a batch the database
    /// refused, so only the culprit fails.
    async fn settle_each(&self, settlements: &[Settlement]) -> Vec<Result<SettleOutcome>> {
        let mut results = Vec::with_capacity(settlements.len());
        for settlement in settlements {
            let one = std::slice::from_ref(settlement);
            let result = match self.call_batch(one).await {
                Ok(mut outcomes) => outcomes.pop().unwrap_or(Err(Error::NotFound)),
                Err(BatchRefused::Split(error) | BatchRefused::Failed(error)) => Err(error),
            };
            results.push(result);
        }
        results
    }

    async fn call_batch(
        &self,
        settlements: &[Settlement],
    ) -> std::result::Result<Vec<Result<SettleOutcome>>, BatchRefused> {
        match tokio::time::timeout(self.call_timeout(), self.settle_batch(settlements)).await {
            Ok(result) => result,
            Err(elapsed) => Err(BatchRefused::Failed(Error::unavailable(elapsed))),
        }
    }

    async fn sweep_table(&self, sql: &'static str, stale: Duration, n: usize) -> Result<Vec<Uuid>> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let found = sqlx::query(sql)
            .bind(micros(stale))
            .bind(limit(n))
            .fetch_all(self.pool())
            .await
            .map_err(from_sqlx)?;
        found
            .iter()
            .map(|row| row.try_get::<Uuid, _>("id").map_err(from_sqlx))
            .collect()
    }
}

#[async_trait]
impl SettlementStore for PgStore {
    async fn begin_payments(
        &self,
        ids: &[PaymentId],
        lease: LeaseId,
        duration: Duration,
    ) -> Result<Vec<BeginOutcome>> {
        let uuids: Vec<Uuid> = ids.iter().map(|id| id.as_uuid()).collect();
        let statements = (BEGIN_PAYMENTS, RELEASE_PAYMENTS);
        let mut outcomes = self
            .claim(statements, &uuids, lease, duration, |found| {
                payment_outcomes(ids, found)
            })
            .await?;
        // An id given again: busy when its first occurrence claimed it, else the same answer.
        let mut first: HashMap<PaymentId, BeginOutcome> = HashMap::new();
        for (id, outcome) in ids.iter().zip(outcomes.iter_mut()) {
            match first.get(id) {
                Some(BeginOutcome::Claimed(_) | BeginOutcome::Voiding { .. }) => {
                    *outcome = BeginOutcome::Busy;
                }
                Some(earlier) => *outcome = earlier.clone(),
                None => {
                    first.insert(*id, outcome.clone());
                }
            }
        }
        Ok(outcomes)
    }

    async fn begin_refunds(
        &self,
        ids: &[RefundId],
        lease: LeaseId,
        duration: Duration,
    ) -> Result<Vec<RefundBegin>> {
        let uuids: Vec<Uuid> = ids.iter().map(|id| id.as_uuid()).collect();
        let statements = (BEGIN_REFUNDS, RELEASE_REFUNDS);
        let mut outcomes = self
            .claim(statements, &uuids, lease, duration, |found| {
                refund_outcomes(ids, found)
            })
            .await?;
        let mut first: HashMap<RefundId, RefundBegin> = HashMap::new();
        for (id, outcome) in ids.iter().zip(outcomes.iter_mut()) {
            match first.get(id) {
                Some(RefundBegin::Claimed(_)) => *outcome = RefundBegin::Busy,
                Some(earlier) => *outcome = earlier.clone(),
                None => {
                    first.insert(*id, outcome.clone());
                }
            }
        }
        Ok(outcomes)
    }

    async fn begin_void(&self, id: PaymentId, lease: LeaseId, duration: Duration) -> Result<bool> {
        self.call(async {
            let extended = sqlx::query(BEGIN_VOID)
                .bind(id.as_uuid())
                .bind(lease.as_uuid())
                .bind(micros(duration))
                .execute(self.pool())
                .await
                .map_err(from_sqlx)?;
            Ok(extended.rows_affected() == 1)
        })
        .await
    }

    async fn release(&self, job: Job, lease: LeaseId) -> Result<()> {
        let (sql, id) = match job {
            Job::Payment(id) => (RELEASE_PAYMENTS, id.as_uuid()),
            Job::Refund(id) => (RELEASE_REFUNDS, id.as_uuid()),
        };
        self.call(async {
            sqlx::query(sql)
                .bind(vec![id])
                .bind(lease.as_uuid())
                .execute(self.pool())
                .await
                .map_err(from_sqlx)?;
            Ok(())
        })
        .await
    }

    async fn settle(&self, settlements: &[Settlement]) -> Vec<Result<SettleOutcome>> {
        if settlements.is_empty() {
            return Vec::new();
        }
        match self.call_batch(settlements).await {
            Ok(results) => results,
            Err(BatchRefused::Failed(error)) => error_for_each(&error, settlements.len()),
            Err(BatchRefused::Split(error)) if settlements.len() == 1 => vec![Err(error)],
            Err(BatchRefused::Split(error)) => {
                tracing::debug!(error = ?copy_error(&error), "batch refused; settling each alone");
                self.settle_each(settlements).await
            }
        }
    }

    async fn sweep(&self, stale_after: Duration, limit: usize) -> Result<Vec<Job>> {
        self.call(async {
            let payments = self.sweep_table(SWEEP_PAYMENTS, stale_after, limit).await?;
            let left = limit.saturating_sub(payments.len());
            let refunds = self.sweep_table(SWEEP_REFUNDS, stale_after, left).await?;
            Ok(payments
                .into_iter()
                .map(|id| Job::Payment(id.into()))
                .chain(refunds.into_iter().map(|id| Job::Refund(id.into())))
                .collect())
        })
        .await
    }

    async fn expire_authorizations(
        &self,
        authorization_ttl: Duration,
        limit_to: usize,
    ) -> Result<Vec<Payment>> {
        self.call(async {
            let mut tx = self.begin().await?;
            let found = sqlx::query(EXPIRE)
                .bind(micros(authorization_ttl))
                .bind(limit(limit_to))
                .fetch_all(&mut *tx)
                .await
                .map_err(from_sqlx)?;
            let canceled = found
                .iter()
                .map(rows::payment)
                .collect::<Result<Vec<_>>>()?;
            let events: Vec<Event> = canceled.iter().filter_map(Event::of_payment).collect();
            write_events(&mut tx, &events).await?;
            tx.commit().await.map_err(from_sqlx)?;
            Ok(canceled)
        })
        .await
    }

    async fn open_payments(&self) -> Result<OpenPayments> {
        self.call(async {
            let row = sqlx::query(OPEN_PAYMENTS)
                .fetch_one(self.pool())
                .await
                .map_err(from_sqlx)?;
            Ok(OpenPayments {
                count: rows::count(&row, "open")?,
                oldest: rows::optional_timestamp(&row, "oldest")?,
            })
        })
        .await
    }
}

// The backlog: open payments (the partial index `payments_open` holds exactly them) and when
// the oldest became open, as the books audit counts stuck ones (L12): a capture from its
// request, any other from its creation.
const OPEN_PAYMENTS: &str = "SELECT count(*) AS open, \
    min(CASE WHEN capture_requested IS NULL THEN created_at ELSE updated_at END) AS oldest \
    FROM payments WHERE status IN ('PENDING', 'PROCESSING')";
