//! A settlement batch and an accept group read their own rows, however the tables have grown
//! since the connection first ran them. PostgreSQL switches a prepared statement to a generic plan after five runs;
//! made while `payments` held a few rows, that plan is a sequential scan, and a connection
//! that kept it would read every payment for every batch. One connection runs every
//! statement here, so it is the one that made the plans.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use atomic_core::idempotency::{Claim, ClaimToken};
use atomic_core::ledger::Transfer;
use atomic_core::money::Currency;
use atomic_core::ports::{BeginOutcome, LeaseId, Settlement, SettlementResult};
use atomic_core::testkit::{
    Onboarded, StoreKit, completion, onboard, payment, stored_payment, system_account, unique_key,
};
use atomic_core::time::Timestamp;
use atomic_postgres::testkit::TestDatabase;
use sqlx::PgPool;

const GROWN_BY: i64 = 5_000;

#[tokio::test]
async fn a_batch_reads_its_own_rows_after_the_table_grew() {
    let db = TestDatabase::create_with(|config| config.max_connections = 1).await;
    let pool = db.store().pool().clone();
    let kit = db.kit();
    let merchant = onboard(&kit, Currency::USD).await;
    // Enough batches while the table is small for every statement to take its generic plan.
    for _ in 0..8 {
        settle_batch(&kit, &merchant).await;
    }
    grow(&pool, &merchant).await;

    let before = rows_scanned(&pool, "payments").await;
    settle_batch(&kit, &merchant).await;
    let scanned = rows_scanned(&pool, "payments").await - before;
    assert!(
        scanned < GROWN_BY,
        "one batch of 2 read {scanned} payments by sequential scan"
    );
}

#[tokio::test]
async fn an_accept_group_reads_its_own_rows_after_the_tables_grew() {
    let db = TestDatabase::create_with(|config| config.max_connections = 1).await;
    let pool = db.store().pool().clone();
    let kit = db.kit();
    let merchant = onboard(&kit, Currency::USD).await;
    // Enough groups while the tables are small for the statement to take its generic plan.
    for _ in 0..8 {
        accept_keyed(&kit, &merchant).await;
    }
    grow(&pool, &merchant).await;
    sqlx::query(
        "INSERT INTO idempotency_keys (scope, key, fingerprint, token, locked_at, expires_at) \
         SELECT $1, 'grown-' || n, sha256(n::text::bytea), gen_random_uuid(), now(), now() + interval '1 day' \
         FROM generate_series(1, $2) AS n",
    )
    .bind(merchant.merchant.id.as_uuid())
    .bind(GROWN_BY)
    .execute(&pool)
    .await
    .unwrap();

    let before =
        rows_scanned(&pool, "payments").await + rows_scanned(&pool, "idempotency_keys").await;
    accept_keyed(&kit, &merchant).await;
    let scanned = rows_scanned(&pool, "payments").await
        + rows_scanned(&pool, "idempotency_keys").await
        - before;
    assert!(
        scanned < GROWN_BY,
        "one keyed payment read {scanned} payments and keys by sequential scan"
    );
}

/// Stores one payment under a key nobody claimed, as the accept path does.
async fn accept_keyed(kit: &StoreKit, merchant: &Onboarded) {
    let funding = system_account(kit, Currency::USD).await;
    let p = payment(&merchant.account, &funding, 100, "tok_visa");
    let claim = Claim {
        scope: merchant.principal(),
        key: unique_key(),
        token: ClaimToken::generate(),
    };
    kit.store
        .payments()
        .create_payment(&p, Some(completion(&claim, "{}")))
        .await
        .unwrap();
}

/// Stores two payments, claims them in one batch and settles them in one.
async fn settle_batch(kit: &StoreKit, merchant: &Onboarded) {
    let payments = [
        stored_payment(kit, merchant, 100).await,
        stored_payment(kit, merchant, 200).await,
    ];
    let ids: Vec<_> = payments.iter().map(|p| p.id).collect();
    let lease = LeaseId::generate();
    let settlement = kit.store.settlement();
    let outcomes = settlement
        .begin_payments(&ids, lease, Duration::from_secs(30))
        .await
        .unwrap();
    let settlements: Vec<Settlement> = outcomes
        .into_iter()
        .map(|outcome| {
            let BeginOutcome::Claimed(held) = outcome else {
                panic!("not claimed: {outcome:?}");
            };
            Settlement::Payment {
                payment_id: held.id,
                lease,
                result: SettlementResult::Posted(
                    Transfer::for_payment(&held, Timestamp::now()).unwrap(),
                ),
            }
        })
        .collect();
    for result in settlement.settle(&settlements).await {
        result.unwrap();
    }
}

/// `GROWN_BY` more payments of the merchant, open and old enough to be left alone.
async fn grow(pool: &PgPool, merchant: &Onboarded) {
    let account = merchant.account.id.as_uuid();
    sqlx::query(
        "INSERT INTO payments (id, merchant_account, funding_account, owner_merchant, amount, \
         currency, source, description, capture_method, metadata, created_by, status, \
         touched_at, created_at, updated_at) \
         SELECT gen_random_uuid(), $1, f.id, a.owner_merchant, 100, 'USD', 'tok_visa', '', \
             'automatic', '{}', a.owner_merchant, 'PENDING', now(), now(), now() \
         FROM generate_series(1, $2) \
         CROSS JOIN accounts a \
         CROSS JOIN (SELECT id FROM accounts WHERE kind = 'system' AND currency = 'USD') f \
         WHERE a.id = $1",
    )
    .bind(account)
    .bind(GROWN_BY)
    .execute(pool)
    .await
    .unwrap();
}

/// Rows of `table` read by sequential scans so far, as the statistics have them once the pool's
/// one backend has flushed its own.
async fn rows_scanned(pool: &PgPool, table: &str) -> i64 {
    let mut conn = pool.acquire().await.unwrap();
    // Flushed before the backend answers ready for the next query.
    sqlx::query("SELECT pg_stat_force_next_flush()")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query_scalar(
        "SELECT coalesce(seq_tup_read, 0)::bigint FROM pg_stat_user_tables WHERE relname = $1",
    )
    .bind(table)
    .fetch_one(&mut *conn)
    .await
    .unwrap()
}
