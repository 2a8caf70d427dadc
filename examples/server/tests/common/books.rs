//! The books checked from the test's side, by what each row means rather than by what a
//! constraint already forbids (`UNIQUE (payment_id)` makes "no payment posted twice" true by
//! construction, so counting duplicates proves nothing):
//! - every payment id a client saw in a 202 is looked up by id, and is stored under the key
//!   and with the amount the client sent (L11);
//! - every charge posting is the DEBIT of its payment's funding (World) account and the CREDIT
//!   of its merchant account, both of `amountCaptured`, for a SUCCESS payment; every refund
//!   posting is the reverse, of the refund's amount, for a SUCCESS refund; every SUCCESS
//!   payment and refund has its posting and nothing else has one (L2, L3, L13);
//! - each account's balance is what its SUCCESS payments and refunds moved (L4 against the
//!   statuses, not against the journal).
//!
//! Everything is read in one REPEATABLE READ snapshot and compared in Rust.

use std::collections::HashMap;
use std::time::Duration;

use sqlx::PgPool;

/// T_heal of TEST-MATRIX for a process running with `lease` and `sweep` (the recovery sweep
/// interval): lease + sweep interval + 30 s. The L12 audit (`stuck_payments`) uses it.
pub const fn t_heal(lease: Duration, sweep: Duration) -> Duration {
    lease
        .saturating_add(sweep)
        .saturating_add(Duration::from_secs(30))
}

/// One 202 a client saw: the Idempotency-Key it sent, the payment id it was given, and the
/// amount it asked for.
#[derive(Clone, Debug)]
pub struct Acked {
    pub key: String,
    pub id: String,
    pub amount: i64,
}

/// Looks every acknowledged payment up by its id: it must be stored, under the key and with
/// the amount the client sent. Returns how many were looked up.
pub async fn assert_acked_stored(pool: &PgPool, acked: &[Acked]) -> usize {
    let ids: Vec<&str> = acked.iter().map(|a| a.id.as_str()).collect();
    let rows: Vec<(String, Option<String>, i64)> = sqlx::query_as(
        "SELECT id::text, idempotency_key, amount FROM payments WHERE id::text = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await
    .unwrap();
    let stored: HashMap<String, (Option<String>, i64)> = rows
        .into_iter()
        .map(|(id, key, amount)| (id, (key, amount)))
        .collect();
    let mut missing = Vec::new();
    let mut wrong = Vec::new();
    for a in acked {
        match stored.get(&a.id) {
            None => missing.push(format!("{} (key {})", a.id, a.key)),
            Some((key, amount))
                if key.as_deref() != Some(a.key.as_str()) || *amount != a.amount =>
            {
                wrong.push(format!(
                    "{}: sent key {} amount {}, stored key {key:?} amount {amount}",
                    a.id, a.key, a.amount
                ));
            }
            Some(_) => {}
        }
    }
    assert!(
        missing.is_empty(),
        "{} payments acknowledged with a 202 but not stored, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert!(
        wrong.is_empty(),
        "{} payments stored unlike what was acknowledged, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
    acked.len()
}

/// A posting or an entry row: ids, accounts or direction, and the amount.
type LedgerRow = (String, String, String, String, i64);
/// A posting that should exist: debit account, credit account, amount.
type Expected = (String, String, i64);

/// What [`assert_postings_match_payments`] counted.
#[derive(Debug)]
pub struct Posted {
    pub payments: usize,
    pub succeeded: usize,
    pub refunds: usize,
    pub postings: usize,
}

/// One REPEATABLE READ snapshot of what the books check reads.
struct Snapshot {
    /// id, merchant, funding, amount_captured, status.
    payments: Vec<(String, String, String, i64, String)>,
    /// id, payment, merchant, funding, amount, status.
    refunds: Vec<(String, String, String, String, i64, String)>,
    /// id, payment, refund ("" for a charge), debit, credit, amount.
    postings: Vec<(String, String, String, String, String, i64)>,
    entries: Vec<LedgerRow>,
    accounts: Vec<(String, String, i64)>,
}

async fn snapshot(pool: &PgPool) -> Snapshot {
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .execute(&mut *tx)
        .await
        .unwrap();
    let payments = sqlx::query_as(
        "SELECT id::text, merchant_account::text, funding_account::text, amount_captured, status \
         FROM payments",
    )
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    let refunds = sqlx::query_as(
        "SELECT id::text, payment_id::text, merchant_account::text, funding_account::text, \
         amount, status FROM refunds",
    )
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    let postings = sqlx::query_as(
        "SELECT id::text, payment_id::text, coalesce(refund_id::text, ''), debit_account::text, \
         credit_account::text, amount FROM ledger_transactions",
    )
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    let entries = sqlx::query_as(
        "SELECT transaction_id::text, payment_id::text, account_id::text, direction, amount \
         FROM ledger_entries",
    )
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    let accounts = sqlx::query_as("SELECT id::text, kind, balance FROM accounts")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    Snapshot {
        payments,
        refunds,
        postings,
        entries,
        accounts,
    }
}

/// The postings the statuses call for, by (payment, refund or ""): a charge of
/// `amountCaptured` for each SUCCESS payment, a refund back for each SUCCESS refund.
fn expected_postings(books: &Snapshot) -> HashMap<(String, String), Expected> {
    let mut expected = HashMap::new();
    for (id, merchant, funding, captured, status) in &books.payments {
        if status == "SUCCESS" {
            let posting = (funding.clone(), merchant.clone(), *captured);
            expected.insert((id.clone(), String::new()), posting);
        }
    }
    for (id, payment, merchant, funding, amount, status) in &books.refunds {
        if status == "SUCCESS" {
            let posting = (merchant.clone(), funding.clone(), *amount);
            expected.insert((payment.clone(), id.clone()), posting);
        }
    }
    expected
}

/// Each posting against the payment or refund it posts, each SUCCESS payment and refund
/// against its posting, each account's balance against its SUCCESS payments and refunds.
/// Panics listing (up to 10 of) the violations.
pub async fn assert_postings_match_payments(pool: &PgPool) -> Posted {
    let books = snapshot(pool).await;
    let mut expected = expected_postings(&books);
    let mut balances: HashMap<&str, i64> = HashMap::new();
    for (debit, credit, amount) in expected.values() {
        *balances.entry(debit.as_str()).or_default() -= amount;
        *balances.entry(credit.as_str()).or_default() += amount;
    }
    let balances: HashMap<String, i64> = balances
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    let mut entries_of: HashMap<&str, Vec<&LedgerRow>> = HashMap::new();
    for e in &books.entries {
        entries_of.entry(e.0.as_str()).or_default().push(e);
    }
    let mut bad = Vec::new();
    for (tx_id, payment, refund, debit, credit, amount) in &books.postings {
        let what = format!("posting {tx_id} (payment {payment}, refund {refund:?})");
        match expected.remove(&(payment.clone(), refund.clone())) {
            None => bad.push(format!("{what}: no SUCCESS payment or refund calls for it")),
            Some(want) if want != (debit.clone(), credit.clone(), *amount) => bad.push(format!(
                "{what}: DEBIT {debit} CREDIT {credit} {amount}, expected {want:?}"
            )),
            Some(_) => {}
        }
        // Its entries: one DEBIT and one CREDIT of its amount on its accounts.
        let mut sides = vec![
            ("DEBIT", debit.as_str(), *amount),
            ("CREDIT", credit.as_str(), *amount),
        ];
        for (_, entry_payment, account, direction, entry_amount) in
            entries_of.remove(tx_id.as_str()).unwrap_or_default()
        {
            let side = (direction.as_str(), account.as_str(), *entry_amount);
            match sides.iter().position(|s| *s == side) {
                Some(at) if entry_payment == payment => {
                    sides.remove(at);
                }
                _ => bad.push(format!(
                    "{what}: entry {direction} {entry_amount} on {account}"
                )),
            }
        }
        bad.extend(sides.iter().map(|s| format!("{what}: no entry {s:?}")));
    }
    bad.extend(
        expected
            .keys()
            .map(|(p, r)| format!("no posting of payment {p} refund {r:?}")),
    );
    bad.extend(
        entries_of
            .keys()
            .map(|tx| format!("entries of a missing transaction {tx}")),
    );
    for (id, kind, balance) in &books.accounts {
        let want = balances.get(id).copied().unwrap_or(0);
        if *balance != want {
            bad.push(format!(
                "{kind} account {id}: balance {balance}, its postings say {want}"
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "{} ledger violations, e.g.:\n{}",
        bad.len(),
        bad.iter().take(10).cloned().collect::<Vec<_>>().join("\n")
    );
    Posted {
        payments: books.payments.len(),
        succeeded: books.payments.iter().filter(|p| p.4 == "SUCCESS").count(),
        refunds: books.refunds.len(),
        postings: books.postings.len(),
    }
}
