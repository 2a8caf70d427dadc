//! `LedgerStore` on [`PgStore`]: accounts, payments, entries and settlement. Transitions are
//! compare-and-set `UPDATE … WHERE status = …` statements; `settle` is one transaction that
//! takes the payment by CAS, locks both accounts in id order (no deadlock under any
//! interleaving), and writes the posting, both balances and the final status together.

use std::time::Duration;

use async_trait::async_trait;
use atomic_core::account::{Account, AccountKind};
use atomic_core::error::Invariant;
use atomic_core::id::{AccountId, EntryId, PaymentId};
use atomic_core::idempotency::Completion;
use atomic_core::ledger::{Entry, Transfer};
use atomic_core::page::{Page, PageRequest};
use atomic_core::payment::{Payment, PaymentStatus};
use atomic_core::ports::{
    BeginOutcome, LeaseId, LedgerStore, SettleOutcome, Settlement, SettlementResult,
};
use atomic_core::principal::Principal;
use atomic_core::{Balance, Error, Result};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::error::from_sqlx;
use crate::idempotency::complete_in;
use crate::rows::{
    self, account_columns, entry_columns, micros, owner_uuid, payment_columns, viewer_merchant,
};
use crate::store::PgStore;

const SELECT_SYSTEM_ACCOUNT: &str = concat!(
    "SELECT ",
    account_columns!(),
    " FROM accounts WHERE currency = $1 AND kind = 'system'"
);

const SELECT_ACCOUNT: &str = concat!(
    "SELECT ",
    account_columns!(),
    " FROM accounts WHERE id = $1 AND ($2::uuid IS NULL OR owner_merchant = $2)"
);

const SELECT_ENTRIES: &str = concat!(
    "SELECT ",
    entry_columns!(),
    " FROM ledger_entries WHERE account_id = $1 AND ($2::uuid IS NULL OR id < $2) \
     ORDER BY id DESC LIMIT $3"
);

const SELECT_PAYMENT: &str = concat!(
    "SELECT ",
    payment_columns!(),
    " FROM payments WHERE id = $1 AND ($2::uuid IS NULL OR owner_merchant = $2)"
);

// One list query per (viewer, filter) shape, so each can use its own index. A filter on an
// open status repeats the open-status predicate as a literal so the planner can prove it and
// use the partial index `payments_owner_open` (small: open payments only); a filter on a final
// status reads the owner index or the primary key and filters (most rows are final).
const LIST_ALL: &str = concat!(
    "SELECT ",
    payment_columns!(),
    " FROM payments WHERE ($1::uuid IS NULL OR id < $1) ORDER BY id DESC LIMIT $2"
);
const LIST_ALL_BY_STATUS: &str = concat!(
    "SELECT ",
    payment_columns!(),
    " FROM payments WHERE status = $3 AND ($1::uuid IS NULL OR id < $1) \
     ORDER BY id DESC LIMIT $2"
);
const LIST_ALL_OPEN_BY_STATUS: &str = concat!(
    "SELECT ",
    payment_columns!(),
    " FROM payments WHERE status = $3 AND status IN ('PENDING', 'PROCESSING') \
     AND ($1::uuid IS NULL OR id < $1) ORDER BY id DESC LIMIT $2"
);
const LIST_OWN: &str = concat!(
    "SELECT ",
    payment_columns!(),
    " FROM payments WHERE owner_merchant = $4 AND ($1::uuid IS NULL OR id < $1) \
     ORDER BY id DESC LIMIT $2"
);
const LIST_OWN_BY_STATUS: &str = concat!(
    "SELECT ",
    payment_columns!(),
    " FROM payments WHERE owner_merchant = $4 AND status = $3 \
     AND ($1::uuid IS NULL OR id < $1) ORDER BY id DESC LIMIT $2"
);
const LIST_OWN_OPEN_BY_STATUS: &str = concat!(
    "SELECT ",
    payment_columns!(),
    " FROM payments WHERE owner_merchant = $4 AND status = $3 \
     AND status IN ('PENDING', 'PROCESSING') \
     AND ($1::uuid IS NULL OR id < $1) ORDER BY id DESC LIMIT $2"
);

const BEGIN_PROCESSING: &str = concat!(
    "UPDATE payments SET status = 'PROCESSING', lease_id = $2, \
     lease_until = now() + $3 * interval '1 microsecond', touched_at = now(), \
     updated_at = CASE WHEN status = 'PENDING' THEN now() ELSE updated_at END \
     WHERE id = $1 AND (status = 'PENDING' OR (status = 'PROCESSING' AND lease_until <= now())) \
     RETURNING voiding_attempt, ",
    payment_columns!()
);

// Extends a lease still held ($1 payment, $2 lease, $3 microseconds from now).
const RENEW: &str = "UPDATE payments SET lease_until = now() + $3 * interval '1 microsecond' \
     WHERE id = $1 AND status = 'PROCESSING' AND lease_id = $2 AND lease_until > now()";

// RENEW, and the payment's charge is being voided from now on (the database then refuses
// SUCCESS for it: `payments_voided_only_fails`); the mark names the attempt, the lease.
const BEGIN_VOID: &str = "UPDATE payments SET lease_until = now() + $3 * interval '1 microsecond', \
     voiding_at = COALESCE(voiding_at, now()), voiding_attempt = COALESCE(voiding_attempt, $2) \
     WHERE id = $1 AND status = 'PROCESSING' AND lease_id = $2 AND lease_until > now()";

const PAYMENT_AND_LEASE: &str = concat!(
    "SELECT ",
    payment_columns!(),
    " FROM payments WHERE id = $1"
);

const FINISH: &str = concat!(
    "UPDATE payments SET status = $3, failure_reason = $4, lease_id = NULL, lease_until = NULL, \
     updated_at = now() \
     WHERE id = $1 AND status = 'PROCESSING' AND lease_id = $2 RETURNING ",
    payment_columns!()
);

// NO KEY UPDATE, not UPDATE: a balance change leaves the keys alone, so it must not block
// (or deadlock with) concurrent inserts of payments and postings whose foreign keys take KEY
// SHARE locks on these same account rows.
const LOCK_ACCOUNTS: &str =
    "SELECT id, kind, balance FROM accounts WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE";

// The posting: the transaction, both entries and both balances in one statement (rows of a
// data-modifying WITH all happen, or the statement fails as a whole).
const POST: &str = "\
WITH tx AS (
    INSERT INTO ledger_transactions
        (id, payment_id, debit_account, credit_account, amount, currency, created_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7)
), entries AS (
    INSERT INTO ledger_entries
        (id, transaction_id, payment_id, account_id, direction, amount, currency, created_at)
    SELECT e.id, $1, $2, e.account_id, e.direction, $5, $6, $7
    FROM unnest($8::uuid[], $9::uuid[], $10::text[]) AS e(id, account_id, direction)
)
UPDATE accounts a SET balance = a.balance + d.delta
FROM unnest($11::uuid[], $12::bigint[]) AS d(id, delta)
WHERE a.id = d.id";

// The batch statements below find their rows by primary key only. Their status tests are
// written as CASE so the planner cannot match them to the partial indexes of open payments:
// it estimated those indexes by their few live rows and scanned them whole for every batch
// (a bitmap AND with the primary key), but they hold two dead entries per payment until vacuum,
// and a bitmap scan never marks entries dead, so each batch read every payment ever settled
// since the last vacuum (BENCHMARKS.md, run 4).

// Claims many payments and reads the batch back in ONE statement, so a claim is never taken
// without its answer: rows locked in id order (no deadlock between claimers), the same
// compare-and-set as BEGIN_PROCESSING for each, then the rows not claimed (`taken` false) as
// they stood, looked up by primary key among the ids the claim left.
const BEGIN_PROCESSING_MANY: &str = concat!(
    "WITH claimed AS (UPDATE payments SET status = 'PROCESSING', lease_id = $2, \
     lease_until = now() + $3 * interval '1 microsecond', touched_at = now(), \
     updated_at = CASE WHEN status = 'PENDING' THEN now() ELSE updated_at END \
     WHERE id IN (SELECT id FROM payments WHERE id = ANY($1) \
         AND CASE status WHEN 'PENDING' THEN true \
             WHEN 'PROCESSING' THEN lease_until <= now() ELSE false END \
         ORDER BY id FOR NO KEY UPDATE) \
     AND CASE status WHEN 'PENDING' THEN true \
         WHEN 'PROCESSING' THEN lease_until <= now() ELSE false END \
     RETURNING voiding_attempt, ",
    payment_columns!(),
    ") SELECT true AS taken, voiding_attempt, ",
    payment_columns!(),
    " FROM claimed UNION ALL SELECT false AS taken, NULL::uuid, ",
    payment_columns!(),
    " FROM payments WHERE id = ANY(ARRAY(SELECT unnest($1::uuid[]) EXCEPT SELECT id FROM claimed))"
);

const PAYMENTS_BY_ID: &str = concat!(
    "SELECT ",
    payment_columns!(),
    " FROM payments WHERE id = ANY($1)"
);

// Ends every lease of a batch claim whose answer could not be read.
const RELEASE_MANY: &str = "UPDATE payments SET lease_until = now() \
     WHERE id = ANY($1) AND CASE status WHEN 'PROCESSING' THEN lease_id = $2 ELSE false END";

// Locks a batch's payment rows in id order first, as every batch claim does, so a batch being
// settled and a batch being claimed (a redelivery after a lease ran out) cannot deadlock.
const LOCK_PAYMENTS: &str =
    "SELECT 1 FROM payments WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE";

// Ends many held payments: each row only if still PROCESSING under the caller's lease.
const FINISH_MANY: &str = concat!(
    "WITH s AS (SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[]) \
         AS s(sid, slease, sstatus, sreason)) \
     UPDATE payments SET status = s.sstatus, failure_reason = s.sreason, lease_id = NULL, \
         lease_until = NULL, updated_at = now() \
     FROM s WHERE id = s.sid \
         AND CASE status WHEN 'PROCESSING' THEN lease_id = s.slease ELSE false END RETURNING ",
    payment_columns!()
);

// The postings of a batch: every transaction, every entry, and each account's summed delta
// once, in one statement.
const POST_MANY: &str = "\
WITH tx AS (
    INSERT INTO ledger_transactions
        (id, payment_id, debit_account, credit_account, amount, currency, created_at)
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::bigint[],
        $6::text[], $7::timestamptz[])
), entries AS (
    INSERT INTO ledger_entries
        (id, transaction_id, payment_id, account_id, direction, amount, currency, created_at)
    SELECT * FROM unnest($8::uuid[], $9::uuid[], $10::uuid[], $11::uuid[], $12::text[],
        $13::bigint[], $14::text[], $15::timestamptz[])
)
UPDATE accounts a SET balance = a.balance + d.delta
FROM unnest($16::uuid[], $17::bigint[]) AS d(id, delta)
WHERE a.id = d.id";

const SWEEP: &str = "\
UPDATE payments SET touched_at = now() WHERE id IN (
    SELECT id FROM payments
    WHERE status IN ('PENDING', 'PROCESSING')
      AND touched_at <= now() - $1 * interval '1 microsecond'
      AND (lease_until IS NULL OR lease_until <= now())
    ORDER BY touched_at LIMIT $2 FOR NO KEY UPDATE SKIP LOCKED)
RETURNING id";

fn limit_plus_one(page_limit: usize) -> i64 {
    i64::try_from(page_limit.saturating_add(1)).unwrap_or(i64::MAX)
}

async fn insert_account(conn: &mut PgConnection, account: &Account) -> Result<()> {
    sqlx::query(
        "INSERT INTO accounts (id, name, currency, kind, owner_merchant, balance, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(account.id.as_uuid())
    .bind(account.name.as_str())
    .bind(account.currency.as_str())
    .bind(account.kind.as_str())
    .bind(owner_uuid(account.owner))
    .bind(account.balance.minor_units())
    .bind(account.created_at.as_datetime())
    .execute(conn)
    .await
    .map_err(from_sqlx)?;
    Ok(())
}

/// Stores a new merchant account (used by account creation and onboarding).
pub(crate) async fn insert_merchant_account(
    conn: &mut PgConnection,
    account: &Account,
) -> Result<()> {
    if account.kind != AccountKind::Merchant || account.balance != Balance::ZERO {
        return Err(Invariant::PostingMismatch.into());
    }
    insert_account(conn, account).await
}

impl PgStore {
    /// Runs `sql` (RENEW or BEGIN_VOID) for a lease; `true` when it still held the payment.
    async fn extend_lease(
        &self,
        sql: &'static str,
        id: PaymentId,
        lease: LeaseId,
        duration: Duration,
    ) -> Result<bool> {
        self.call(async {
            let extended = sqlx::query(sql)
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

    /// Ends a held payment with `result`, in the caller's transaction; `None` when the lease is
    /// not held.
    async fn finish(
        conn: &mut PgConnection,
        settlement: &Settlement,
        status: PaymentStatus,
        reason: Option<&str>,
    ) -> Result<Option<Payment>> {
        let row = sqlx::query(FINISH)
            .bind(settlement.payment_id.as_uuid())
            .bind(settlement.lease.as_uuid())
            .bind(status.as_str())
            .bind(reason)
            .fetch_optional(conn)
            .await
            .map_err(from_sqlx)?;
        row.as_ref().map(rows::payment).transpose()
    }

    /// Writes `transfer` for `payment` (already SUCCESS in this transaction): locks both
    /// accounts in id order, checks the new balances, then posts.
    async fn post(conn: &mut PgConnection, payment: &Payment, transfer: &Transfer) -> Result<()> {
        if !transfer.matches(payment) {
            return Err(Invariant::PostingMismatch.into());
        }
        let amount = transfer.amount();
        let debit = transfer.debit_account();
        let credit = transfer.credit_account();
        let locked = sqlx::query(LOCK_ACCOUNTS)
            .bind(vec![debit.as_uuid(), credit.as_uuid()])
            .fetch_all(&mut *conn)
            .await
            .map_err(from_sqlx)?;
        if locked.len() != 2 {
            return Err(Invariant::MissingReference.into());
        }
        // The core's checked arithmetic first (overflow, overdraft), then the database's own
        // constraints when the rows are written.
        for row in &locked {
            let id: Uuid = row.try_get("id").map_err(from_sqlx)?;
            let kind: String = row.try_get("kind").map_err(from_sqlx)?;
            let balance = Balance::from_minor_units(row.try_get("balance").map_err(from_sqlx)?);
            let next = if id == debit.as_uuid() {
                balance.debit(amount)?
            } else {
                balance.credit(amount)?
            };
            if kind != AccountKind::System.as_str() && next < Balance::ZERO {
                return Err(Invariant::InsufficientFunds.into());
            }
        }
        let [debit_entry, credit_entry] = transfer.entries();
        sqlx::query(POST)
            .bind(transfer.id().as_uuid())
            .bind(transfer.payment_id().as_uuid())
            .bind(debit.as_uuid())
            .bind(credit.as_uuid())
            .bind(amount.minor_units())
            .bind(transfer.currency().as_str())
            .bind(transfer.created_at().as_datetime())
            .bind(vec![debit_entry.id.as_uuid(), credit_entry.id.as_uuid()])
            .bind(vec![debit.as_uuid(), credit.as_uuid()])
            .bind(vec![
                debit_entry.direction.as_str(),
                credit_entry.direction.as_str(),
            ])
            .bind(vec![debit.as_uuid(), credit.as_uuid()])
            .bind(vec![-amount.minor_units(), amount.minor_units()])
            .execute(conn)
            .await
            .map_err(from_sqlx)?;
        Ok(())
    }

    async fn settle_once(&self, settlement: &Settlement) -> Result<SettleOutcome> {
        let mut tx = self.begin().await?;
        let (status, reason) = match &settlement.result {
            SettlementResult::Posted(_) => (PaymentStatus::Success, None),
            SettlementResult::Failed(reason) => (PaymentStatus::Failed, Some(reason.as_str())),
        };
        let Some(payment) = Self::finish(&mut tx, settlement, status, reason).await? else {
            tx.rollback().await.map_err(from_sqlx)?;
            let row = sqlx::query("SELECT status FROM payments WHERE id = $1")
                .bind(settlement.payment_id.as_uuid())
                .fetch_optional(self.pool())
                .await
                .map_err(from_sqlx)?
                .ok_or(Error::NotFound)?;
            let status: String = row.try_get("status").map_err(from_sqlx)?;
            return Ok(SettleOutcome::NotHeld {
                status: PaymentStatus::parse(&status)
                    .map_err(|_| crate::error::corrupt("payment status"))?,
            });
        };
        if let SettlementResult::Posted(transfer) = &settlement.result {
            Self::post(&mut tx, &payment, transfer).await?;
        }
        tx.commit().await.map_err(from_sqlx)?;
        Ok(SettleOutcome::Settled(payment))
    }
}

/// Why a batch was not written in one transaction.
enum BatchRefused {
    /// Something in it cannot be written (a mismatched posting, a balance limit): each
    /// settlement is tried alone, so only the culprit fails.
    Split,
    /// The store failed; every settlement of the batch gets this error.
    Failed(Error),
}

impl From<Error> for BatchRefused {
    fn from(error: Error) -> Self {
        match error {
            Error::Invariant(_) => Self::Split,
            other => Self::Failed(other),
        }
    }
}

/// The same error for each of `n` results (core errors do not clone; the cause is kept as text).
fn error_for_each(error: &Error, n: usize) -> Vec<Result<SettleOutcome>> {
    (0..n)
        .map(|_| {
            Err(match error {
                Error::Unavailable(source) => Error::unavailable(source.to_string()),
                Error::Invariant(invariant) => Error::Invariant(*invariant),
                other => Error::backend(format!("{other:?}")),
            })
        })
        .collect()
}

impl PgStore {
    /// Settles a batch in one transaction: every CAS in one statement, the accounts locked
    /// once in id order, every posting and each account's summed delta in one statement.
    async fn settle_batch(
        &self,
        settlements: &[Settlement],
    ) -> std::result::Result<Vec<Result<SettleOutcome>>, BatchRefused> {
        let mut tx = self.begin().await?;
        let mut ids = Vec::with_capacity(settlements.len());
        let mut leases = Vec::with_capacity(settlements.len());
        let mut statuses = Vec::with_capacity(settlements.len());
        let mut reasons = Vec::with_capacity(settlements.len());
        for s in settlements {
            ids.push(s.payment_id.as_uuid());
            leases.push(s.lease.as_uuid());
            match &s.result {
                SettlementResult::Posted(_) => {
                    statuses.push(PaymentStatus::Success.as_str());
                    reasons.push(None);
                }
                SettlementResult::Failed(reason) => {
                    statuses.push(PaymentStatus::Failed.as_str());
                    reasons.push(Some(reason.as_str()));
                }
            }
        }
        sqlx::query(LOCK_PAYMENTS)
            .bind(&ids)
            .execute(&mut *tx)
            .await
            .map_err(from_sqlx)?;
        let finished = sqlx::query(FINISH_MANY)
            .bind(&ids)
            .bind(&leases)
            .bind(&statuses)
            .bind(&reasons)
            .fetch_all(&mut *tx)
            .await
            .map_err(from_sqlx)?;
        let mut settled = std::collections::HashMap::with_capacity(finished.len());
        for row in &finished {
            let payment = rows::payment(row)?;
            settled.insert(payment.id, payment);
        }

        // The postings of the settled SUCCESS payments, and each account's summed delta.
        let mut deltas: std::collections::BTreeMap<Uuid, i64> = std::collections::BTreeMap::new();
        let mut post = PostColumns::default();
        for s in settlements {
            let (SettlementResult::Posted(transfer), Some(payment)) =
                (&s.result, settled.get(&s.payment_id))
            else {
                continue;
            };
            if !transfer.matches(payment) {
                return Err(BatchRefused::Split);
            }
            let amount = transfer.amount().minor_units();
            for (account, delta) in [
                (transfer.debit_account().as_uuid(), -amount),
                (transfer.credit_account().as_uuid(), amount),
            ] {
                let sum = deltas.entry(account).or_insert(0);
                *sum = sum.checked_add(delta).ok_or(BatchRefused::Split)?;
            }
            post.push(transfer);
        }
        if !deltas.is_empty() {
            let accounts: Vec<Uuid> = deltas.keys().copied().collect();
            let locked = sqlx::query(LOCK_ACCOUNTS)
                .bind(&accounts)
                .fetch_all(&mut *tx)
                .await
                .map_err(from_sqlx)?;
            if locked.len() != accounts.len() {
                return Err(BatchRefused::Split);
            }
            for row in &locked {
                let id: Uuid = row.try_get("id").map_err(from_sqlx)?;
                let kind: String = row.try_get("kind").map_err(from_sqlx)?;
                let balance: i64 = row.try_get("balance").map_err(from_sqlx)?;
                let delta = deltas.get(&id).copied().unwrap_or(0);
                let next = balance.checked_add(delta).ok_or(BatchRefused::Split)?;
                if kind != AccountKind::System.as_str() && next < 0 {
                    return Err(BatchRefused::Split);
                }
            }
            let (delta_accounts, delta_amounts): (Vec<Uuid>, Vec<i64>) = deltas.into_iter().unzip();
            post.query()
                .bind(delta_accounts)
                .bind(delta_amounts)
                .execute(&mut *tx)
                .await
                .map_err(from_sqlx)?;
        }

        // Those not settled here: their status now (read in the same transaction).
        let unsettled: Vec<Uuid> = settlements
            .iter()
            .filter(|s| !settled.contains_key(&s.payment_id))
            .map(|s| s.payment_id.as_uuid())
            .collect();
        let mut current = std::collections::HashMap::new();
        if !unsettled.is_empty() {
            for row in sqlx::query(PAYMENTS_BY_ID)
                .bind(&unsettled)
                .fetch_all(&mut *tx)
                .await
                .map_err(from_sqlx)?
            {
                let payment = rows::payment(&row)?;
                current.insert(payment.id, payment.status());
            }
        }
        tx.commit().await.map_err(from_sqlx)?;
        Ok(settlements
            .iter()
            .map(|s| match settled.remove(&s.payment_id) {
                Some(payment) => Ok(SettleOutcome::Settled(payment)),
                None => current
                    .get(&s.payment_id)
                    .map(|status| SettleOutcome::NotHeld { status: *status })
                    .ok_or(Error::NotFound),
            })
            .collect())
    }
}

/// The columns of a batch's postings, one array per column (bound with `unnest`).
#[derive(Default)]
struct PostColumns {
    tx_ids: Vec<Uuid>,
    payment_ids: Vec<Uuid>,
    debits: Vec<Uuid>,
    credits: Vec<Uuid>,
    amounts: Vec<i64>,
    currencies: Vec<String>,
    created: Vec<time::OffsetDateTime>,
    entry_ids: Vec<Uuid>,
    entry_tx: Vec<Uuid>,
    entry_payment: Vec<Uuid>,
    entry_account: Vec<Uuid>,
    entry_direction: Vec<&'static str>,
    entry_amount: Vec<i64>,
    entry_currency: Vec<String>,
    entry_created: Vec<time::OffsetDateTime>,
}

impl PostColumns {
    fn push(&mut self, transfer: &Transfer) {
        let amount = transfer.amount().minor_units();
        let currency = transfer.currency().as_str().to_owned();
        let created = transfer.created_at().as_datetime();
        self.tx_ids.push(transfer.id().as_uuid());
        self.payment_ids.push(transfer.payment_id().as_uuid());
        self.debits.push(transfer.debit_account().as_uuid());
        self.credits.push(transfer.credit_account().as_uuid());
        self.amounts.push(amount);
        self.currencies.push(currency.clone());
        self.created.push(created);
        for entry in transfer.entries() {
            self.entry_ids.push(entry.id.as_uuid());
            self.entry_tx.push(transfer.id().as_uuid());
            self.entry_payment.push(transfer.payment_id().as_uuid());
            self.entry_account.push(entry.account_id.as_uuid());
            self.entry_direction.push(entry.direction.as_str());
            self.entry_amount.push(amount);
            self.entry_currency.push(currency.clone());
            self.entry_created.push(created);
        }
    }

    /// `POST_MANY` with every posting column bound; the caller binds the deltas ($16, $17).
    fn query(self) -> sqlx::query::Query<'static, sqlx::Postgres, sqlx::postgres::PgArguments> {
        sqlx::query(POST_MANY)
            .bind(self.tx_ids)
            .bind(self.payment_ids)
            .bind(self.debits)
            .bind(self.credits)
            .bind(self.amounts)
            .bind(self.currencies)
            .bind(self.created)
            .bind(self.entry_ids)
            .bind(self.entry_tx)
            .bind(self.entry_payment)
            .bind(self.entry_account)
            .bind(self.entry_direction)
            .bind(self.entry_amount)
            .bind(self.entry_currency)
            .bind(self.entry_created)
    }
}

/// A row this caller just claimed (with its `voiding_attempt`), as its outcome.
fn claimed_outcome(row: &sqlx::postgres::PgRow) -> Result<BeginOutcome> {
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

/// One outcome per id, in order, from the rows of `BEGIN_PROCESSING_MANY`.
fn claim_outcomes(ids: &[PaymentId], found: &[sqlx::postgres::PgRow]) -> Result<Vec<BeginOutcome>> {
    let mut claimed = std::collections::HashMap::new();
    let mut others = std::collections::HashMap::new();
    for row in found {
        if row.try_get::<bool, _>("taken").map_err(from_sqlx)? {
            let outcome = claimed_outcome(row)?;
            let id: Uuid = row.try_get("id").map_err(from_sqlx)?;
            claimed.insert(PaymentId::from(id), outcome);
        } else {
            let payment = rows::payment(row)?;
            others.insert(payment.id, payment);
        }
    }
    Ok(ids
        .iter()
        .map(|id| match (claimed.remove(id), others.remove(id)) {
            (Some(outcome), _) => outcome,
            (None, Some(payment)) if payment.status().is_terminal() => {
                BeginOutcome::Finished(payment)
            }
            (None, Some(_)) => BeginOutcome::Busy,
            (None, None) => BeginOutcome::Missing,
        })
        .collect())
}

fn has_duplicates(ids: impl Iterator<Item = PaymentId>) -> bool {
    let mut seen = std::collections::HashSet::new();
    ids.into_iter().any(|id| !seen.insert(id))
}

#[async_trait]
impl LedgerStore for PgStore {
    async fn ping(&self) -> Result<()> {
        self.call(async {
            sqlx::query("SELECT 1")
                .execute(self.pool())
                .await
                .map_err(from_sqlx)?;
            Ok(())
        })
        .await
    }

    async fn ensure_system_account(&self, candidate: &Account) -> Result<Account> {
        if candidate.kind != AccountKind::System {
            return Err(Invariant::PostingMismatch.into());
        }
        self.call(async {
            sqlx::query(
                "INSERT INTO accounts (id, name, currency, kind, owner_merchant, balance, \
                 created_at) VALUES ($1, $2, $3, 'system', NULL, 0, $4) \
                 ON CONFLICT (currency) WHERE kind = 'system' DO NOTHING",
            )
            .bind(candidate.id.as_uuid())
            .bind(candidate.name.as_str())
            .bind(candidate.currency.as_str())
            .bind(candidate.created_at.as_datetime())
            .execute(self.pool())
            .await
            .map_err(from_sqlx)?;
            let row = sqlx::query(SELECT_SYSTEM_ACCOUNT)
                .bind(candidate.currency.as_str())
                .fetch_one(self.pool())
                .await
                .map_err(from_sqlx)?;
            rows::account(&row)
        })
        .await
    }

    async fn create_account(
        &self,
        account: &Account,
        completion: Option<Completion>,
    ) -> Result<()> {
        self.call(async {
            let mut tx = self.begin().await?;
            if let Some(completion) = &completion {
                complete_in(&mut tx, completion).await?;
            }
            insert_merchant_account(&mut tx, account).await?;
            tx.commit().await.map_err(from_sqlx)
        })
        .await
    }

    async fn account(&self, id: AccountId, viewer: Principal) -> Result<Option<Account>> {
        self.call(async {
            let row = sqlx::query(SELECT_ACCOUNT)
                .bind(id.as_uuid())
                .bind(viewer_merchant(viewer))
                .fetch_optional(self.pool())
                .await
                .map_err(from_sqlx)?;
            row.as_ref().map(rows::account).transpose()
        })
        .await
    }

    async fn entries(
        &self,
        account: AccountId,
        viewer: Principal,
        page: PageRequest<EntryId>,
    ) -> Result<Option<Page<Entry>>> {
        self.call(async {
            let visible = sqlx::query(
                "SELECT EXISTS (SELECT 1 FROM accounts \
                 WHERE id = $1 AND ($2::uuid IS NULL OR owner_merchant = $2)) AS visible, \
                 ($3::uuid IS NULL OR EXISTS (SELECT 1 FROM ledger_entries \
                 WHERE id = $3 AND account_id = $1)) AS cursor_ok",
            )
            .bind(account.as_uuid())
            .bind(viewer_merchant(viewer))
            .bind(page.starting_after.map(|c| c.as_uuid()))
            .fetch_one(self.pool())
            .await
            .map_err(from_sqlx)?;
            if !row_flag(&visible, "visible")? {
                return Ok(None);
            }
            if !row_flag(&visible, "cursor_ok")? {
                return Err(Error::UnknownCursor);
            }
            let found = sqlx::query(SELECT_ENTRIES)
                .bind(account.as_uuid())
                .bind(page.starting_after.map(|c| c.as_uuid()))
                .bind(limit_plus_one(page.limit.get()))
                .fetch_all(self.pool())
                .await
                .map_err(from_sqlx)?;
            let items = found.iter().map(rows::entry).collect::<Result<Vec<_>>>()?;
            Ok(Some(Page::from_overfetch(items, page.limit)))
        })
        .await
    }

    async fn create_payment(
        &self,
        payment: &Payment,
        completion: Option<Completion>,
    ) -> Result<()> {
        if payment.status() != PaymentStatus::Pending {
            return Err(Error::IllegalTransition {
                from: PaymentStatus::Pending,
                to: payment.status(),
            });
        }
        let (answer, answered) = tokio::sync::oneshot::channel();
        let insert = crate::accept::Insert {
            payment: payment.clone(),
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
        status: Option<PaymentStatus>,
        page: PageRequest<PaymentId>,
    ) -> Result<Page<Payment>> {
        self.call(async {
            let merchant = viewer_merchant(viewer);
            self.check_cursor(
                "SELECT 1 FROM payments WHERE id = $1 AND ($2::uuid IS NULL OR owner_merchant = $2)",
                page.starting_after.map(|c| c.as_uuid()),
                merchant,
            )
            .await?;
            let open = status.map(|s| !s.is_terminal());
            let sql = match (merchant.is_some(), open) {
                (false, None) => LIST_ALL,
                (false, Some(false)) => LIST_ALL_BY_STATUS,
                (false, Some(true)) => LIST_ALL_OPEN_BY_STATUS,
                (true, None) => LIST_OWN,
                (true, Some(false)) => LIST_OWN_BY_STATUS,
                (true, Some(true)) => LIST_OWN_OPEN_BY_STATUS,
            };
            let mut query = sqlx::query(sql)
                .bind(page.starting_after.map(|c| c.as_uuid()))
                .bind(limit_plus_one(page.limit.get()));
            if let Some(status) = status {
                query = query.bind(status.as_str());
            } else if merchant.is_some() {
                // Keep the owner at $4 in every shape.
                query = query.bind(None::<&str>);
            }
            if let Some(merchant) = merchant {
                query = query.bind(merchant);
            }
            let found = query.fetch_all(self.pool()).await.map_err(from_sqlx)?;
            let items = found
                .iter()
                .map(rows::payment)
                .collect::<Result<Vec<_>>>()?;
            Ok(Page::from_overfetch(items, page.limit))
        })
        .await
    }

    async fn begin_processing(
        &self,
        id: PaymentId,
        lease: LeaseId,
        duration: Duration,
    ) -> Result<BeginOutcome> {
        self.call(async {
            let claimed = sqlx::query(BEGIN_PROCESSING)
                .bind(id.as_uuid())
                .bind(lease.as_uuid())
                .bind(micros(duration))
                .fetch_optional(self.pool())
                .await
                .map_err(from_sqlx)?;
            if let Some(row) = claimed {
                return claimed_outcome(&row);
            }
            let Some(row) = sqlx::query(PAYMENT_AND_LEASE)
                .bind(id.as_uuid())
                .fetch_optional(self.pool())
                .await
                .map_err(from_sqlx)?
            else {
                return Ok(BeginOutcome::Missing);
            };
            let payment = rows::payment(&row)?;
            Ok(if payment.status().is_terminal() {
                BeginOutcome::Finished(payment)
            } else {
                // PROCESSING under a live lease (or it changed hands since the CAS).
                BeginOutcome::Busy
            })
        })
        .await
    }

    async fn begin_processing_many(
        &self,
        ids: &[PaymentId],
        lease: LeaseId,
        duration: Duration,
    ) -> Result<Vec<BeginOutcome>> {
        if has_duplicates(ids.iter().copied()) {
            // A job delivered twice in one batch: claim one at a time (the second is Busy).
            let mut outcomes = Vec::with_capacity(ids.len());
            for id in ids {
                outcomes.push(self.begin_processing(*id, lease, duration).await?);
            }
            return Ok(outcomes);
        }
        self.call(async {
            let uuids: Vec<Uuid> = ids.iter().map(|id| id.as_uuid()).collect();
            let found = sqlx::query(BEGIN_PROCESSING_MANY)
                .bind(&uuids)
                .bind(lease.as_uuid())
                .bind(micros(duration))
                .fetch_all(self.pool())
                .await
                .map_err(from_sqlx)?;
            let read = claim_outcomes(ids, &found);
            if read.is_err() {
                // Leases taken but their answer unreadable: end them now, so the payments come
                // back with their next delivery rather than after the lease.
                let released = sqlx::query(RELEASE_MANY)
                    .bind(&uuids)
                    .bind(lease.as_uuid())
                    .execute(self.pool())
                    .await;
                if let Err(error) = released {
                    tracing::warn!(?error, "releasing an unreadable batch claim failed");
                }
            }
            read
        })
        .await
    }

    async fn renew(&self, id: PaymentId, lease: LeaseId, duration: Duration) -> Result<bool> {
        self.extend_lease(RENEW, id, lease, duration).await
    }

    async fn begin_void(&self, id: PaymentId, lease: LeaseId, duration: Duration) -> Result<bool> {
        self.extend_lease(BEGIN_VOID, id, lease, duration).await
    }

    async fn release(&self, id: PaymentId, lease: LeaseId) -> Result<()> {
        self.call(async {
            sqlx::query(
                "UPDATE payments SET lease_until = now() \
                 WHERE id = $1 AND status = 'PROCESSING' AND lease_id = $2",
            )
            .bind(id.as_uuid())
            .bind(lease.as_uuid())
            .execute(self.pool())
            .await
            .map_err(from_sqlx)?;
            Ok(())
        })
        .await
    }

    async fn settle(&self, settlement: &Settlement) -> Result<SettleOutcome> {
        self.call(self.settle_once(settlement)).await
    }

    async fn settle_many(&self, settlements: &[Settlement]) -> Vec<Result<SettleOutcome>> {
        let batched = if has_duplicates(settlements.iter().map(|s| s.payment_id)) {
            Err(BatchRefused::Split)
        } else {
            match tokio::time::timeout(self.call_timeout(), self.settle_batch(settlements)).await {
                Ok(result) => result,
                Err(elapsed) => Err(BatchRefused::Failed(Error::unavailable(elapsed))),
            }
        };
        match batched {
            Ok(results) => results,
            Err(BatchRefused::Failed(error)) => error_for_each(&error, settlements.len()),
            Err(BatchRefused::Split) => {
                // One at a time, each in its own transaction: only the culprit fails.
                let mut results = Vec::with_capacity(settlements.len());
                for settlement in settlements {
                    results.push(self.settle(settlement).await);
                }
                results
            }
        }
    }

    async fn sweep(&self, stale_after: Duration, limit: usize) -> Result<Vec<PaymentId>> {
        self.call(async {
            let found = sqlx::query(SWEEP)
                .bind(micros(stale_after))
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .fetch_all(self.pool())
                .await
                .map_err(from_sqlx)?;
            found
                .iter()
                .map(|row| {
                    row.try_get::<Uuid, _>("id")
                        .map(PaymentId::from)
                        .map_err(from_sqlx)
                })
                .collect()
        })
        .await
    }
}

fn row_flag(row: &sqlx::postgres::PgRow, column: &str) -> Result<bool> {
    row.try_get(column).map_err(from_sqlx)
}
