//! Settlement on [`PgStore`]: a batch of payment and refund settlements in ONE transaction.
//! The rows are locked in a fixed order (payments, then refunds, then accounts, each in id
//! order: no deadlock under any interleaving), each settlement is decided in order by the
//! core's own transitions on the locked rows (so a batch settles exactly as its settlements
//! would one after another), and what was decided is written with one statement per table:
//! every status and counter, every posting, and each account's summed delta once (the system
//! account is updated once per batch). A settlement the rows refuse (not held, a balance that
//! cannot cover it) gets its own answer and is left out; the others are written. Should the
//! database still refuse the batch (a guard the core did not foresee), each settlement is
//! tried alone, so only the culprit fails.
//!
//! Every batch moves the same hot rows (the system account and the merchant's), so how long
//! it holds their locks bounds settlement. A batch that debits an account which must cover
//! the debit (a refund) locks its accounts before deciding, as the decision reads their
//! balances. Any other batch only adds to balances (a system account may go negative), so it
//! decides on balances read without a lock, writes its payments, refunds and postings (which
//! lock no account row), and only then locks the accounts, for the balance update and the
//! commit; the update adds the summed deltas to the balances as they are then, so a batch in
//! between changes nothing.
//! Either way a batch takes all its account locks at once, in id order, after its payments
//! and refunds.

use std::collections::{BTreeMap, HashMap};

use atomic_core::account::Account;
use atomic_core::error::Invariant;
use atomic_core::event::Event;
use atomic_core::id::{AccountId, PaymentId, RefundId};
use atomic_core::ledger::Transfer;
use atomic_core::payment::Payment;
use atomic_core::ports::{RefundResult, SettleOutcome, Settlement, SettlementResult};
use atomic_core::refund::Refund;
use atomic_core::time::Timestamp;
use atomic_core::{Error, Result};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::error::from_sqlx;
use crate::events::write_events;
use crate::rows::{self, account_columns, payment_columns, refund_columns};
use crate::store::{PgStore, batch_query};

// The batch's payments (its own, and those of its refunds), locked in id order, with the
// transaction's time (what the statuses are stamped with). One id array, so the primary key
// serves it: `id = ANY($1) OR id IN (...)` is a scan of the whole table.
macro_rules! lock_payments {
    () => {
        concat!(
            "SELECT now() AS stamped_at, lease_id, voiding_attempt, ",
            payment_columns!(),
            " FROM payments \
             WHERE id = ANY($1::uuid[] || ARRAY(SELECT payment_id FROM refunds WHERE id = ANY($2))) \
             ORDER BY id FOR NO KEY UPDATE"
        )
    };
}
pub(crate) const LOCK_PAYMENTS: &str = lock_payments!();

const LOCK_REFUNDS: &str = concat!(
    "SELECT lease_id, ",
    refund_columns!(),
    " FROM refunds WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE"
);

// The batch's accounts as they are (decisions that only add to balances need no lock).
pub(crate) const READ_ACCOUNTS: &str = concat!(
    "SELECT ",
    account_columns!(),
    " FROM accounts WHERE id = ANY($1)"
);

// NO KEY UPDATE, not UPDATE: a balance change leaves the keys alone, so it must not block
// (or deadlock with) concurrent inserts of payments and postings whose foreign keys take KEY
// SHARE locks on these same account rows.
const LOCK_ACCOUNTS: &str = concat!(
    "SELECT ",
    account_columns!(),
    " FROM accounts WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE"
);

// LOCK_ACCOUNTS for a batch that decided without the locks: taken in id order in a statement
// of its own (an UPDATE locks its rows in whatever order its plan meets them).
pub(crate) const LOCK_ACCOUNTS_LATE: &str =
    "SELECT id FROM accounts WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE";

// The decided state of every payment the batch changed (settled, or its refund counters
// moved); no lease is left on any of them.
pub(crate) const WRITE_PAYMENTS: &str = "\
UPDATE payments p SET status = s.status, failure_reason = s.failure_reason,
    capture_requested = NULL, amount_captured = s.captured, amount_reserved = s.reserved,
    amount_refunded = s.refunded, lease_id = NULL, lease_until = NULL, updated_at = now()
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[])
    AS s(id, status, failure_reason, captured, reserved, refunded)
WHERE p.id = s.id";

const WRITE_REFUNDS: &str = "\
UPDATE refunds r SET status = s.status, failure_reason = s.failure_reason, lease_id = NULL,
    lease_until = NULL, updated_at = now()
FROM unnest($1::uuid[], $2::text[], $3::text[]) AS s(id, status, failure_reason)
WHERE r.id = s.id";

// The postings of a batch: every transaction and every entry, in one statement (rows of a
// data-modifying WITH all happen, or none). They lock no account row: their accounts are
// checked at commit by the posting check, not by foreign keys.
pub(crate) const POST_MANY: &str = "\
WITH tx AS (
    INSERT INTO ledger_transactions
        (id, payment_id, refund_id, debit_account, credit_account, amount, currency, created_at)
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::uuid[],
        $6::bigint[], $7::text[], $8::timestamptz[])
)
INSERT INTO ledger_entries (id, transaction_id, payment_id, refund_id, account_id,
    direction, amount, currency, created_at)
SELECT * FROM unnest($9::uuid[], $10::uuid[], $11::uuid[], $12::uuid[], $13::uuid[],
    $14::text[], $15::bigint[], $16::text[], $17::timestamptz[])";

// Each account's summed delta, once, added to its balance as it is now.
pub(crate) const MOVE_BALANCES: &str = "\
UPDATE accounts a SET balance = a.balance + d.delta
FROM unnest($1::uuid[], $2::bigint[]) AS d(id, delta)
WHERE a.id = d.id";

/// Why a batch was not written in one transaction.
pub(crate) enum BatchRefused {
    /// The database refused something in it (a posting, a guard): each settlement is tried
    /// alone, so only the culprit fails. Carries the refusal, the answer of a batch of one.
    Split(Error),
    /// The store failed; every settlement of the batch gets this error.
    Failed(Error),
}

impl From<Error> for BatchRefused {
    fn from(error: Error) -> Self {
        match error {
            Error::Invariant(_) => Self::Split(error),
            other => Self::Failed(other),
        }
    }
}

/// The same error for each of `n` results (core errors do not clone; the cause is kept as text).
pub(crate) fn error_for_each(error: &Error, n: usize) -> Vec<Result<SettleOutcome>> {
    (0..n).map(|_| Err(copy_error(error))).collect()
}

pub(crate) fn copy_error(error: &Error) -> Error {
    match error {
        Error::Unavailable(source) => Error::unavailable(source.to_string()),
        Error::Invariant(invariant) => Error::Invariant(*invariant),
        other => Error::backend(format!("{other:?}")),
    }
}

/// A locked row and the lease on it as the batch goes.
struct Held<T> {
    row: T,
    lease: Option<Uuid>,
    changed: bool,
}

/// The locked rows of a batch, changed in memory as each settlement is decided.
#[derive(Default)]
struct Batch {
    /// The database's `now()` for this transaction; `None` when no payment row was found
    /// (then nothing is settled).
    now: Option<Timestamp>,
    payments: HashMap<PaymentId, Held<Payment>>,
    voiding: HashMap<PaymentId, Uuid>,
    refunds: HashMap<RefundId, Held<Refund>>,
    accounts: HashMap<AccountId, Account>,
    /// Whether `accounts` were read under their locks (else the write takes them).
    accounts_locked: bool,
    postings: PostColumns,
    deltas: BTreeMap<Uuid, i64>,
}

impl Batch {
    /// Applies `transfer` to the running balances, or refuses it (overdraft, overflow) and
    /// changes nothing.
    fn post(&mut self, transfer: &Transfer) -> Result<()> {
        let mut next = Vec::with_capacity(2);
        for entry in transfer.entries() {
            let account = self
                .accounts
                .get(&entry.account_id)
                .ok_or(Invariant::MissingReference)?;
            if account.currency != transfer.currency() {
                return Err(Invariant::PostingMismatch.into());
            }
            next.push((account.id, account.apply(entry.direction, entry.amount)?));
        }
        for (id, balance) in next {
            if let Some(account) = self.accounts.get_mut(&id) {
                let delta = balance.minor_units() - account.balance.minor_units();
                *self.deltas.entry(id.as_uuid()).or_insert(0) += delta;
                account.balance = balance;
            }
        }
        self.postings.push(transfer);
        Ok(())
    }

    fn settle(&mut self, settlement: &Settlement, now: Timestamp) -> Result<SettleOutcome> {
        match settlement {
            Settlement::Payment {
                payment_id,
                lease,
                result,
            } => self.settle_payment(*payment_id, lease.as_uuid(), result, now),
            Settlement::Refund {
                refund_id,
                lease,
                result,
            } => self.settle_refund(*refund_id, lease.as_uuid(), result, now),
        }
    }

    fn settle_payment(
        &mut self,
        id: PaymentId,
        lease: Uuid,
        result: &SettlementResult,
        now: Timestamp,
    ) -> Result<SettleOutcome> {
        let held = self.payments.get(&id).ok_or(Error::NotFound)?;
        if held.row.status() != atomic_core::PaymentStatus::Processing || held.lease != Some(lease)
        {
            return Ok(SettleOutcome::NotHeld);
        }
        let mut payment = held.row.clone();
        match result {
            SettlementResult::Failed(reason) => payment.fail(*reason, now)?,
            // A payment whose void has begun can only fail.
            _ if self.voiding.contains_key(&id) => return Err(Invariant::Voided.into()),
            SettlementResult::Authorized => payment.authorize(now)?,
            SettlementResult::Posted(transfer) => {
                payment.succeed(now)?;
                if !transfer.matches(&payment) {
                    return Err(Invariant::PostingMismatch.into());
                }
                self.post(transfer)?;
            }
        }
        self.payments.insert(
            id,
            Held {
                row: payment.clone(),
                lease: None,
                changed: true,
            },
        );
        Ok(SettleOutcome::Payment(payment))
    }

    fn settle_refund(
        &mut self,
        id: RefundId,
        lease: Uuid,
        result: &RefundResult,
        now: Timestamp,
    ) -> Result<SettleOutcome> {
        let held = self.refunds.get(&id).ok_or(Error::NotFound)?;
        if held.row.status() != atomic_core::RefundStatus::Processing || held.lease != Some(lease) {
            return Ok(SettleOutcome::NotHeld);
        }
        let mut refund = held.row.clone();
        let mut payment = self
            .payments
            .get(&refund.payment_id)
            .ok_or(Invariant::MissingReference)?
            .row
            .clone();
        match result {
            RefundResult::Failed(reason) => {
                refund.fail(*reason, now)?;
                payment.release_refund(refund.amount, now)?;
            }
            RefundResult::Posted(transfer) => {
                refund.succeed(now)?;
                payment.record_refund(refund.amount, now)?;
                if !transfer.matches_refund(&refund) {
                    return Err(Invariant::PostingMismatch.into());
                }
                self.post(transfer)?;
            }
        }
        if let Some(held) = self.payments.get_mut(&payment.id) {
            held.row = payment;
            held.changed = true;
        }
        self.refunds.insert(
            id,
            Held {
                row: refund.clone(),
                lease: None,
                changed: true,
            },
        );
        Ok(SettleOutcome::Refund(refund))
    }
}

/// The ids a batch locks: its payments and its refunds.
fn batch_ids(settlements: &[Settlement]) -> (Vec<Uuid>, Vec<Uuid>) {
    let mut payments = Vec::new();
    let mut refunds = Vec::new();
    for settlement in settlements {
        match settlement {
            Settlement::Payment { payment_id, .. } => payments.push(payment_id.as_uuid()),
            Settlement::Refund { refund_id, .. } => refunds.push(refund_id.as_uuid()),
        }
    }
    (payments, refunds)
}

/// The postings a batch's settlements carry.
fn transfers(settlements: &[Settlement]) -> impl Iterator<Item = &Transfer> {
    settlements.iter().filter_map(|s| match s {
        Settlement::Payment {
            result: SettlementResult::Posted(t),
            ..
        }
        | Settlement::Refund {
            result: RefundResult::Posted(t),
            ..
        } => Some(t),
        _ => None,
    })
}

/// The accounts the batch's postings would move, in id order.
fn posted_accounts(settlements: &[Settlement]) -> Vec<Uuid> {
    let mut accounts: Vec<Uuid> = transfers(settlements)
        .flat_map(|t| [t.debit_account().as_uuid(), t.credit_account().as_uuid()])
        .collect();
    accounts.sort_unstable();
    accounts.dedup();
    accounts
}

/// Whether a posting of the batch debits an account that must cover it, so the decisions
/// need the balances under their locks: a refund debits its merchant's account. A charge or a
/// capture debits its payment's funding account, a system account (`payments_check_accounts`),
/// which may go negative. Were that ever not so, `accounts_non_negative` would still refuse the
/// overdraft.
fn needs_cover(settlements: &[Settlement]) -> bool {
    settlements.iter().any(|s| {
        matches!(
            s,
            Settlement::Refund {
                result: RefundResult::Posted(_),
                ..
            }
        )
    })
}

/// Locks the batch's rows (payments, refunds, accounts, each in id order) and reads them.
async fn lock(conn: &mut PgConnection, settlements: &[Settlement]) -> Result<Batch> {
    let (payment_ids, refund_ids) = batch_ids(settlements);
    let mut batch = Batch::default();
    lock_payments(&mut *conn, &mut batch, &payment_ids, &refund_ids).await?;
    if !refund_ids.is_empty() {
        lock_refunds(&mut *conn, &mut batch, &refund_ids).await?;
    }
    let accounts = posted_accounts(settlements);
    if !accounts.is_empty() {
        batch.accounts_locked = needs_cover(settlements);
        read_accounts(conn, &mut batch, &accounts).await?;
    }
    Ok(batch)
}

/// Locks the batch's payments (its own, and those of its refunds) in id order and reads them
/// into `batch`, each with its lease and its void in progress, and the transaction's time.
async fn lock_payments(
    conn: &mut PgConnection,
    batch: &mut Batch,
    payment_ids: &[Uuid],
    refund_ids: &[Uuid],
) -> Result<()> {
    let found = batch_query(LOCK_PAYMENTS)
        .bind(payment_ids)
        .bind(refund_ids)
        .fetch_all(conn)
        .await
        .map_err(from_sqlx)?;
    for row in &found {
        let stamped_at: time::OffsetDateTime = row.try_get("stamped_at").map_err(from_sqlx)?;
        batch.now = Some(Timestamp::from_datetime(stamped_at));
        let payment = rows::payment(row)?;
        let lease: Option<Uuid> = row.try_get("lease_id").map_err(from_sqlx)?;
        if let Some(attempt) = row
            .try_get::<Option<Uuid>, _>("voiding_attempt")
            .map_err(from_sqlx)?
        {
            batch.voiding.insert(payment.id, attempt);
        }
        let held = Held {
            row: payment,
            lease,
            changed: false,
        };
        batch.payments.insert(held.row.id, held);
    }
    Ok(())
}

/// Locks the batch's refunds in id order and reads them into `batch`, each with its lease.
async fn lock_refunds(
    conn: &mut PgConnection,
    batch: &mut Batch,
    refund_ids: &[Uuid],
) -> Result<()> {
    let found = batch_query(LOCK_REFUNDS)
        .bind(refund_ids)
        .fetch_all(conn)
        .await
        .map_err(from_sqlx)?;
    for row in &found {
        let lease: Option<Uuid> = row.try_get("lease_id").map_err(from_sqlx)?;
        let held = Held {
            row: rows::refund(row)?,
            lease,
            changed: false,
        };
        batch.refunds.insert(held.row.id, held);
    }
    Ok(())
}

/// Reads the batch's `accounts` into it: under their locks, in id order, when its decisions
/// need the balances ([`Batch::accounts_locked`]); else as they are, without a lock.
async fn read_accounts(
    conn: &mut PgConnection,
    batch: &mut Batch,
    accounts: &[Uuid],
) -> Result<()> {
    let sql = if batch.accounts_locked {
        LOCK_ACCOUNTS
    } else {
        READ_ACCOUNTS
    };
    for row in batch_query(sql)
        .bind(accounts)
        .fetch_all(conn)
        .await
        .map_err(from_sqlx)?
    {
        let account = rows::account(&row)?;
        batch.accounts.insert(account.id, account);
    }
    Ok(())
}

/// Writes what the batch decided: statuses and counters, the events of the changes (with
/// their deliveries), the postings, then the balances (under their locks, taken here if the
/// batch decided without them).
async fn write(conn: &mut PgConnection, batch: Batch, events: &[Event]) -> Result<()> {
    write_payments(&mut *conn, &batch.payments).await?;
    write_refunds(&mut *conn, &batch.refunds).await?;
    write_events(&mut *conn, events).await?;
    if !batch.postings.is_empty() {
        post_and_move_balances(conn, batch.postings, batch.deltas, batch.accounts_locked).await?;
    }
    Ok(())
}

/// Writes the decided state of every payment the batch changed, in one statement; none when
/// it changed no payment.
async fn write_payments(
    conn: &mut PgConnection,
    payments: &HashMap<PaymentId, Held<Payment>>,
) -> Result<()> {
    let mut ids = Vec::new();
    let mut statuses = Vec::new();
    let mut failure_reasons = Vec::new();
    let mut captured = Vec::new();
    let mut reserved = Vec::new();
    let mut refunded = Vec::new();
    for held in payments.values().filter(|h| h.changed) {
        let payment = &held.row;
        ids.push(payment.id.as_uuid());
        statuses.push(payment.status().as_str());
        failure_reasons.push(payment.failure_reason().map(|r| r.as_str()));
        captured.push(payment.amount_captured());
        reserved.push(payment.amount_reserved());
        refunded.push(payment.amount_refunded());
    }
    if ids.is_empty() {
        return Ok(());
    }
    batch_query(WRITE_PAYMENTS)
        .bind(ids)
        .bind(statuses)
        .bind(failure_reasons)
        .bind(captured)
        .bind(reserved)
        .bind(refunded)
        .execute(conn)
        .await
        .map_err(from_sqlx)?;
    Ok(())
}

/// Writes the decided state of every refund the batch changed, in one statement; none when it
/// changed no refund.
async fn write_refunds(
    conn: &mut PgConnection,
    refunds: &HashMap<RefundId, Held<Refund>>,
) -> Result<()> {
    let mut ids = Vec::new();
    let mut statuses = Vec::new();
    let mut failure_reasons = Vec::new();
    for held in refunds.values().filter(|h| h.changed) {
        ids.push(held.row.id.as_uuid());
        statuses.push(held.row.status().as_str());
        failure_reasons.push(held.row.failure_reason().map(|r| r.as_str()));
    }
    if ids.is_empty() {
        return Ok(());
    }
    batch_query(WRITE_REFUNDS)
        .bind(ids)
        .bind(statuses)
        .bind(failure_reasons)
        .execute(conn)
        .await
        .map_err(from_sqlx)?;
    Ok(())
}

/// Writes the batch's postings, then adds each account's summed delta to its balance as it is
/// now. The balances move under the accounts' locks: a batch that decided without them
/// (`accounts_locked` false) takes them here first, in id order, in a statement of their own.
async fn post_and_move_balances(
    conn: &mut PgConnection,
    postings: PostColumns,
    deltas: BTreeMap<Uuid, i64>,
    accounts_locked: bool,
) -> Result<()> {
    postings
        .query()
        .execute(&mut *conn)
        .await
        .map_err(from_sqlx)?;
    let (accounts, deltas): (Vec<Uuid>, Vec<i64>) = deltas.into_iter().unzip();
    if !accounts_locked {
        batch_query(LOCK_ACCOUNTS_LATE)
            .bind(&accounts)
            .execute(&mut *conn)
            .await
            .map_err(from_sqlx)?;
    }
    batch_query(MOVE_BALANCES)
        .bind(accounts)
        .bind(deltas)
        .execute(conn)
        .await
        .map_err(from_sqlx)?;
    Ok(())
}

impl PgStore {
    /// Settles `settlements` in one transaction: every row locked, every settlement decided in
    /// order, every write in one statement per table. `Err` only when the transaction as a
    /// whole could not be written.
    pub(crate) async fn settle_batch(
        &self,
        settlements: &[Settlement],
    ) -> std::result::Result<Vec<Result<SettleOutcome>>, BatchRefused> {
        let mut tx = self.begin().await?;
        let mut batch = lock(&mut tx, settlements).await?;
        // Without a payment row no settlement is written, so the time is only a formality.
        let now = batch.now.unwrap_or_else(Timestamp::now);
        let outcomes: Vec<Result<SettleOutcome>> =
            settlements.iter().map(|s| batch.settle(s, now)).collect();
        write(&mut tx, batch, &events_of(&outcomes)).await?;
        tx.commit().await.map_err(from_sqlx)?;
        Ok(outcomes)
    }
}

/// The events of the settlements a batch writes.
fn events_of(outcomes: &[Result<SettleOutcome>]) -> Vec<Event> {
    outcomes
        .iter()
        .filter_map(|outcome| match outcome {
            Ok(SettleOutcome::Payment(payment)) => Event::of_payment(payment),
            Ok(SettleOutcome::Refund(refund)) => Event::of_refund(refund),
            Ok(SettleOutcome::NotHeld) | Err(_) => None,
        })
        .collect()
}

/// The columns of a batch's postings, one array per column (bound with `unnest`).
#[derive(Default)]
struct PostColumns {
    tx_ids: Vec<Uuid>,
    payment_ids: Vec<Uuid>,
    refund_ids: Vec<Option<Uuid>>,
    debits: Vec<Uuid>,
    credits: Vec<Uuid>,
    amounts: Vec<i64>,
    currencies: Vec<String>,
    created: Vec<time::OffsetDateTime>,
    entry_ids: Vec<Uuid>,
    entry_tx: Vec<Uuid>,
    entry_payment: Vec<Uuid>,
    entry_refund: Vec<Option<Uuid>>,
    entry_account: Vec<Uuid>,
    entry_direction: Vec<&'static str>,
    entry_amount: Vec<i64>,
    entry_currency: Vec<String>,
    entry_created: Vec<time::OffsetDateTime>,
}

impl PostColumns {
    fn is_empty(&self) -> bool {
        self.tx_ids.is_empty()
    }

    fn push(&mut self, transfer: &Transfer) {
        let amount = transfer.amount().minor_units();
        let currency = transfer.currency().as_str().to_owned();
        let created = transfer.created_at().as_datetime();
        let refund = transfer.refund_id().map(|r| r.as_uuid());
        self.tx_ids.push(transfer.id().as_uuid());
        self.payment_ids.push(transfer.payment_id().as_uuid());
        self.refund_ids.push(refund);
        self.debits.push(transfer.debit_account().as_uuid());
        self.credits.push(transfer.credit_account().as_uuid());
        self.amounts.push(amount);
        self.currencies.push(currency.clone());
        self.created.push(created);
        for entry in transfer.entries() {
            self.entry_ids.push(entry.id.as_uuid());
            self.entry_tx.push(transfer.id().as_uuid());
            self.entry_payment.push(transfer.payment_id().as_uuid());
            self.entry_refund.push(refund);
            self.entry_account.push(entry.account_id.as_uuid());
            self.entry_direction.push(entry.direction.as_str());
            self.entry_amount.push(amount);
            self.entry_currency.push(currency.clone());
            self.entry_created.push(created);
        }
    }

    /// `POST_MANY` with every posting column bound.
    fn query(self) -> sqlx::query::Query<'static, sqlx::Postgres, sqlx::postgres::PgArguments> {
        sqlx::query(POST_MANY)
            .bind(self.tx_ids)
            .bind(self.payment_ids)
            .bind(self.refund_ids)
            .bind(self.debits)
            .bind(self.credits)
            .bind(self.amounts)
            .bind(self.currencies)
            .bind(self.created)
            .bind(self.entry_ids)
            .bind(self.entry_tx)
            .bind(self.entry_payment)
            .bind(self.entry_refund)
            .bind(self.entry_account)
            .bind(self.entry_direction)
            .bind(self.entry_amount)
            .bind(self.entry_currency)
            .bind(self.entry_created)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use sqlx::Connection;

    use super::*;

    /// The batch lock looks its payments up by primary key: with sequential scans priced out,
    /// a plan whose ids are only a filter walks the whole table (index or heap) on every batch.
    #[tokio::test]
    async fn the_batch_lock_finds_its_payments_by_key() {
        let db = crate::testkit::TestDatabase::create().await;
        let mut conn = PgConnection::connect(db.url()).await.unwrap();
        sqlx::query("SET enable_seqscan = off")
            .execute(&mut conn)
            .await
            .unwrap();
        let plan: Vec<String> = sqlx::query_scalar(concat!("EXPLAIN ", lock_payments!()))
            .bind(vec![Uuid::now_v7()])
            .bind(vec![Uuid::now_v7()])
            .fetch_all(&mut conn)
            .await
            .unwrap();
        // The scan of `payments` and the details of that node, up to its first child.
        let scan = plan
            .iter()
            .position(|line| line.contains(" on payments "))
            .expect("a scan of payments");
        let keyed = plan[scan + 1..]
            .iter()
            .take_while(|line| !line.contains("->") && !line.contains("Plan "))
            .any(|line| line.contains("Cond: (id = ANY"));
        assert!(keyed, "payments found by a filter, not by key: {plan:#?}");
    }
}
