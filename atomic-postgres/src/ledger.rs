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

const INSERT_PAYMENT: &str = "\
INSERT INTO payments (id, merchant_account, funding_account, owner_merchant, amount, currency,
    source, description, idempotency_key, idempotency_token, created_by, status, touched_at,
    created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'PENDING', now(), $12, $12)";

const SELECT_PAYMENT: &str = concat!(
    "SELECT ",
    payment_columns!(),
    " FROM payments WHERE id = $1 AND ($2::uuid IS NULL OR owner_merchant = $2)"
);

// Four list queries, one per (viewer, filter) shape, so each uses its own index.
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

const BEGIN_PROCESSING: &str = concat!(
    "UPDATE payments SET status = 'PROCESSING', lease_id = $2, \
     lease_until = now() + $3 * interval '1 microsecond', touched_at = now(), \
     updated_at = CASE WHEN status = 'PENDING' THEN now() ELSE updated_at END \
     WHERE id = $1 AND (status = 'PENDING' OR (status = 'PROCESSING' AND lease_until <= now())) \
     RETURNING ",
    payment_columns!()
);

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
        self.call(async {
            let mut tx = self.begin().await?;
            if let Some(completion) = &completion {
                complete_in(&mut tx, completion).await?;
            }
            sqlx::query(INSERT_PAYMENT)
                .bind(payment.id.as_uuid())
                .bind(payment.merchant_account.as_uuid())
                .bind(payment.funding_account.as_uuid())
                .bind(owner_uuid(payment.owner))
                .bind(payment.amount.minor_units())
                .bind(payment.currency.as_str())
                .bind(payment.source.expose())
                .bind(payment.description.as_str())
                .bind(payment.idempotency_key.as_ref().map(|k| k.as_str()))
                .bind(completion.as_ref().map(|c| c.claim.token.as_uuid()))
                .bind(viewer_merchant(payment.created_by))
                .bind(payment.created_at.as_datetime())
                .execute(&mut *tx)
                .await
                .map_err(from_sqlx)?;
            tx.commit().await.map_err(from_sqlx)
        })
        .await
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
            if let Some(cursor) = page.starting_after {
                let visible = sqlx::query(
                    "SELECT 1 FROM payments \
                     WHERE id = $1 AND ($2::uuid IS NULL OR owner_merchant = $2)",
                )
                .bind(cursor.as_uuid())
                .bind(merchant)
                .fetch_optional(self.pool())
                .await
                .map_err(from_sqlx)?;
                if visible.is_none() {
                    return Err(Error::UnknownCursor);
                }
            }
            let sql = match (merchant.is_some(), status.is_some()) {
                (false, false) => LIST_ALL,
                (false, true) => LIST_ALL_BY_STATUS,
                (true, false) => LIST_OWN,
                (true, true) => LIST_OWN_BY_STATUS,
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
                return Ok(BeginOutcome::Claimed(rows::payment(&row)?));
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
