//! The books checked from the test's side, by what each row means rather than by what a
//! constraint already forbids (`UNIQUE (payment_id)` makes "no payment posted twice" true by
//! construction, so counting duplicates proves nothing):
//! - every payment id a client saw in a 202 is looked up by id, and is stored under the key
//!   and with the amount the client sent (L11);
//! - every posting is the DEBIT of its payment's funding (World) account and the CREDIT of its
//!   merchant account, both of the payment's amount, for a SUCCESS payment; every SUCCESS
//!   payment has its posting and no other payment has one (L2, L3);
//! - each account's balance is the sum of the SUCCESS amounts it was credited (merchant) or
//!   debited (World) (L4 against the payments, not against the journal).
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

/// A payment row: id, merchant account, funding account, amount, status.
type PaymentRow = (String, String, String, i64, String);
/// A posting or an entry row: ids, accounts or direction, and the amount.
type LedgerRow = (String, String, String, String, i64);

/// What [`assert_postings_match_payments`] counted.
#[derive(Debug)]
pub struct Posted {
    pub payments: usize,
    pub succeeded: usize,
    pub postings: usize,
}

/// Each posting against its payment, each SUCCESS payment against its posting, each account's
/// balance against its SUCCESS payments. Panics listing (up to 10 of) the violations.
pub async fn assert_postings_match_payments(pool: &PgPool) -> Posted {
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .execute(&mut *tx)
        .await
        .unwrap();
    let payments: Vec<PaymentRow> = sqlx::query_as(
        "SELECT id::text, merchant_account::text, funding_account::text, amount, status \
         FROM payments",
    )
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    let postings: Vec<LedgerRow> = sqlx::query_as(
        "SELECT id::text, payment_id::text, debit_account::text, credit_account::text, amount \
         FROM ledger_transactions",
    )
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    let entries: Vec<LedgerRow> = sqlx::query_as(
        "SELECT transaction_id::text, payment_id::text, account_id::text, direction, amount \
         FROM ledger_entries",
    )
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    let accounts: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT id::text, kind, balance FROM accounts")
            .fetch_all(&mut *tx)
            .await
            .unwrap();
    tx.commit().await.unwrap();

    let kind: HashMap<&str, &str> = accounts
        .iter()
        .map(|(id, kind, _)| (id.as_str(), kind.as_str()))
        .collect();
    let by_id: HashMap<&str, &PaymentRow> = payments.iter().map(|p| (p.0.as_str(), p)).collect();
    let mut entries_of: HashMap<&str, Vec<&LedgerRow>> = HashMap::new();
    for e in &entries {
        entries_of.entry(e.0.as_str()).or_default().push(e);
    }
    let mut postings_of: HashMap<&str, usize> = HashMap::new();
    let mut bad = Vec::new();

    for (tx_id, payment_id, debit, credit, amount) in &postings {
        *postings_of.entry(payment_id.as_str()).or_default() += 1;
        let Some((_, merchant, funding, paid, status)) = by_id.get(payment_id.as_str()) else {
            bad.push(format!(
                "posting {tx_id} of an unknown payment {payment_id}"
            ));
            continue;
        };
        if status != "SUCCESS" {
            bad.push(format!(
                "posting {tx_id} of payment {payment_id}, which is {status}"
            ));
        }
        if debit != funding || kind.get(debit.as_str()) != Some(&"system") {
            bad.push(format!(
                "posting {tx_id}: DEBIT {debit}, payment {payment_id} is funded by World account {funding}"
            ));
        }
        if credit != merchant {
            bad.push(format!(
                "posting {tx_id}: CREDIT {credit}, payment {payment_id} is to {merchant}"
            ));
        }
        if amount != paid {
            bad.push(format!(
                "posting {tx_id}: amount {amount}, payment {payment_id} is of {paid}"
            ));
        }
        // Its entries: one DEBIT on the funding account, one CREDIT on the merchant account,
        // each of the payment's amount.
        let sides = entries_of.remove(tx_id.as_str()).unwrap_or_default();
        let mut expected = vec![
            ("DEBIT", funding.as_str(), *paid),
            ("CREDIT", merchant.as_str(), *paid),
        ];
        for (_, entry_payment, account, direction, entry_amount) in &sides {
            let side = (direction.as_str(), account.as_str(), *entry_amount);
            match expected.iter().position(|e| *e == side) {
                Some(at) if entry_payment == payment_id => {
                    expected.remove(at);
                }
                _ => bad.push(format!(
                    "posting {tx_id} of payment {payment_id}: entry {direction} {entry_amount} \
                     on {account} (payment {entry_payment})"
                )),
            }
        }
        for (direction, account, amount) in expected {
            bad.push(format!(
                "posting {tx_id} of payment {payment_id}: no {direction} {amount} on {account}"
            ));
        }
    }
    for (tx_id, sides) in &entries_of {
        bad.push(format!(
            "{} entries of transaction {tx_id}, which does not exist",
            sides.len()
        ));
    }

    let mut credited: HashMap<&str, i64> = HashMap::new();
    let mut debited: HashMap<&str, i64> = HashMap::new();
    let mut succeeded = 0;
    for (id, merchant, funding, amount, status) in &payments {
        let n = postings_of.get(id.as_str()).copied().unwrap_or(0);
        if status == "SUCCESS" {
            succeeded += 1;
            *credited.entry(merchant.as_str()).or_default() += amount;
            *debited.entry(funding.as_str()).or_default() += amount;
            if n != 1 {
                bad.push(format!("SUCCESS payment {id} has {n} postings"));
            }
        } else if n != 0 {
            bad.push(format!("{status} payment {id} has {n} postings"));
        }
    }
    for (id, kind, balance) in &accounts {
        let expected = match kind.as_str() {
            "system" => -debited.get(id.as_str()).copied().unwrap_or(0),
            _ => credited.get(id.as_str()).copied().unwrap_or(0),
        };
        if *balance != expected {
            bad.push(format!(
                "{kind} account {id}: balance {balance}, its SUCCESS payments say {expected}"
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
        payments: payments.len(),
        succeeded,
        postings: postings.len(),
    }
}
