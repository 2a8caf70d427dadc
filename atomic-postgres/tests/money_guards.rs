//! Issue 14, "the database refuses what the contract forbids": for each rule of the v1.1
//! schema, hand-written SQL that breaks it is refused, with the constraint that says so, and
//! the lawful neighbour of each refusal is accepted (so a test fails if its rule is dropped,
//! not only if everything is refused). Each test has a database of its own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use atomic_core::money::Currency;
use atomic_core::payment::PaymentStatus;
use atomic_core::refund::RefundStatus;
use atomic_core::testkit::flows::{
    amount, authorized, claim_and_post, claim_and_post_refund, claim_refund, refund_posting,
    reload, reload_refund, settle_one, stored_refund, succeeded,
};
use atomic_core::testkit::{Onboarded, StoreKit, assert_books_clean, onboard, stored_payment};
use atomic_core::time::Timestamp;
use atomic_core::{Payment, Refund};
use atomic_postgres::testkit::TestDatabase;
use sqlx::{Connection, PgPool};
use uuid::Uuid;

const TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// The SQLSTATE and constraint of a refused statement (or commit).
fn refusal(result: Result<impl std::fmt::Debug, sqlx::Error>) -> (String, String) {
    match result {
        Err(sqlx::Error::Database(db)) => (
            db.code().unwrap_or_default().into_owned(),
            db.constraint().unwrap_or_default().to_owned(),
        ),
        other => panic!("the database must refuse, got {other:?}"),
    }
}

fn check(constraint: &str) -> (String, String) {
    ("23514".to_owned(), constraint.to_owned())
}

/// A database, its owner's pool, the kit on it, and a merchant.
async fn setup() -> (StoreKit, PgPool, Onboarded) {
    let db = TestDatabase::create().await;
    let pool = db.store().pool().clone();
    let kit = db.kit();
    let merchant = onboard(&kit, Currency::USD).await;
    (kit, pool, merchant)
}

/// Runs `sql` with `$1` bound to `id` on `pool`.
async fn run(pool: &PgPool, sql: &str, id: Uuid) -> Result<u64, sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .bind(id)
        .execute(pool)
        .await
        .map(|done| done.rows_affected())
}

/// Hand-written SQL that posts `amount` from `debit` to `credit` for `payment` (a refund's
/// posting when `refund` is set) in `tx`: the transaction, both entries and both balances.
async fn post_by_hand(
    tx: &mut sqlx::PgConnection,
    (payment, refund): (Uuid, Option<Uuid>),
    (debit, credit): (Uuid, Uuid),
    amount: i64,
) -> Result<(), sqlx::Error> {
    let transaction = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO ledger_transactions (id, payment_id, refund_id, debit_account, \
         credit_account, amount, currency, created_at) VALUES ($1, $2, $3, $4, $5, $6, 'USD', now())",
    )
    .bind(transaction)
    .bind(payment)
    .bind(refund)
    .bind(debit)
    .bind(credit)
    .bind(amount)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO ledger_entries (id, transaction_id, payment_id, refund_id, account_id, \
         direction, amount, currency, created_at) \
         SELECT gen_random_uuid(), $1, $2, $3, e.account, e.direction, $6, 'USD', now() \
         FROM (VALUES ($4::uuid, 'DEBIT'), ($5::uuid, 'CREDIT')) AS e(account, direction)",
    )
    .bind(transaction)
    .bind(payment)
    .bind(refund)
    .bind(debit)
    .bind(credit)
    .bind(amount)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE accounts SET balance = balance + CASE WHEN id = $1 THEN -$3 ELSE $3 END \
         WHERE id IN ($1, $2)",
    )
    .bind(debit)
    .bind(credit)
    .bind(amount)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// A refund posting of `amount` for `refund`, by hand.
async fn post_refund_by_hand(
    tx: &mut sqlx::PgConnection,
    refund: &Refund,
    amount: i64,
) -> Result<(), sqlx::Error> {
    post_by_hand(
        tx,
        (refund.payment_id.as_uuid(), Some(refund.id.as_uuid())),
        (
            refund.merchant_account.as_uuid(),
            refund.funding_account.as_uuid(),
        ),
        amount,
    )
    .await
}

/// Writes the event `kind` of payment `payment` (of its refund `refund`, when set) as the store
/// writes it beside the change, in `tx` (the audit's L15 asks for it).
async fn event_by_hand(
    tx: &mut sqlx::PgConnection,
    kind: &str,
    payment: Uuid,
    refund: Option<Uuid>,
) {
    sqlx::query(
        "INSERT INTO events (id, type, merchant_account, owner_merchant, payment_id, refund_id, \
         created_at, body) SELECT gen_random_uuid(), $1, merchant_account, owner_merchant, id, \
         $3, updated_at, '{}' FROM payments WHERE id = $2",
    )
    .bind(kind)
    .bind(payment)
    .bind(refund)
    .execute(&mut *tx)
    .await
    .unwrap();
}

/// Marks held refund `refund` SUCCESS, counting `refunded` on its payment, in `tx`, with its
/// event.
async fn succeed_refund_by_hand(tx: &mut sqlx::PgConnection, refund: &Refund, refunded: i64) {
    sqlx::query(
        "UPDATE refunds SET status = 'SUCCESS', lease_id = NULL, lease_until = NULL \
         WHERE id = $1",
    )
    .bind(refund.id.as_uuid())
    .execute(&mut *tx)
    .await
    .unwrap();
    let (payment, id) = (refund.payment_id.as_uuid(), Some(refund.id.as_uuid()));
    event_by_hand(tx, "refund.succeeded", payment, id).await;
    sqlx::query("UPDATE payments SET amount_refunded = amount_refunded + $2 WHERE id = $1")
        .bind(refund.payment_id.as_uuid())
        .bind(refunded)
        .execute(&mut *tx)
        .await
        .unwrap();
}

/// A manual payment of `authorized` with a capture of `captured` asked, claimed by a worker.
async fn capturing(kit: &StoreKit, to: &Onboarded, authorized_: i64, captured: i64) -> Payment {
    let p = authorized(kit, to, authorized_).await;
    kit.store
        .payments()
        .request_capture(p.id, amount(captured), Timestamp::now(), TTL, None)
        .await
        .unwrap();
    let (_, held) = atomic_core::testkit::flows::claim_payment(kit, p.id).await;
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_transitions_outside_the_table_are_refused() {
    let (kit, pool, merchant) = setup().await;
    let legal = check("payments_legal_transition");
    let pending = stored_payment(&kit, &merchant, 500).await.id.as_uuid();
    let auth = authorized(&kit, &merchant, 800).await;
    let canceled = authorized(&kit, &merchant, 300).await;
    kit.store
        .payments()
        .cancel(
            canceled.id,
            atomic_core::payment::CancellationReason::Requested,
            Timestamp::now(),
            None,
        )
        .await
        .unwrap();
    let cases: [(&str, Uuid, (String, String)); 9] = [
        (
            "UPDATE payments SET status = 'AUTHORIZED' WHERE id = $1",
            pending,
            legal.clone(),
        ),
        (
            "UPDATE payments SET status = 'CANCELED', cancellation_reason = 'requested' WHERE id = $1",
            pending,
            legal.clone(),
        ),
        (
            "UPDATE payments SET status = 'SUCCESS', amount_captured = amount WHERE id = $1",
            auth.id.as_uuid(),
            legal.clone(),
        ),
        (
            "UPDATE payments SET status = 'FAILED', failure_reason = 'card_declined' WHERE id = $1",
            auth.id.as_uuid(),
            legal.clone(),
        ),
        // AUTHORIZED -> PROCESSING only with the capture asked.
        (
            "UPDATE payments SET status = 'PROCESSING' WHERE id = $1",
            auth.id.as_uuid(),
            legal.clone(),
        ),
        (
            "UPDATE payments SET status = 'PENDING' WHERE id = $1",
            auth.id.as_uuid(),
            legal.clone(),
        ),
        (
            "UPDATE payments SET status = 'AUTHORIZED', cancellation_reason = NULL WHERE id = $1",
            canceled.id.as_uuid(),
            legal.clone(),
        ),
        (
            "UPDATE payments SET status = 'PROCESSING', cancellation_reason = NULL, \
             capture_requested = 1 WHERE id = $1",
            canceled.id.as_uuid(),
            legal.clone(),
        ),
        // What a payment is never changes: its capture method and metadata included.
        (
            "UPDATE payments SET capture_method = 'manual', metadata = '{\"a\":\"b\"}' \
             WHERE id = $1",
            pending,
            check("payments_immutable"),
        ),
    ];
    for (sql, id, expected) in cases {
        assert_eq!(refusal(run(&pool, sql, id).await), expected, "{sql}");
    }

    // An automatic payment is never authorized.
    let automatic = stored_payment(&kit, &merchant, 200).await;
    atomic_core::testkit::flows::claim_payment(&kit, automatic.id).await;
    let result = run(
        &pool,
        "UPDATE payments SET status = 'AUTHORIZED', lease_id = NULL, lease_until = NULL \
         WHERE id = $1",
        automatic.id.as_uuid(),
    )
    .await;
    assert_eq!(refusal(result), check("payments_authorization_is_manual"));

    // A capture being posted goes to SUCCESS or FAILED, never back to AUTHORIZED; it posts
    // what was asked, not the authorization.
    let held = capturing(&kit, &merchant, 1000, 600).await;
    for (sql, expected) in [
        (
            "UPDATE payments SET status = 'AUTHORIZED', capture_requested = NULL, \
             lease_id = NULL, lease_until = NULL WHERE id = $1",
            legal.clone(),
        ),
        (
            "UPDATE payments SET status = 'SUCCESS', amount_captured = amount, \
             capture_requested = NULL, lease_id = NULL, lease_until = NULL WHERE id = $1",
            check("payments_capture_once"),
        ),
    ] {
        let result = run(&pool, sql, held.id.as_uuid()).await;
        assert_eq!(refusal(result), expected, "{sql}");
    }
    // The lawful neighbour: AUTHORIZED -> CANCELED, by hand.
    let done = run(
        &pool,
        "UPDATE payments SET status = 'CANCELED', cancellation_reason = 'expired' WHERE id = $1",
        auth.id.as_uuid(),
    )
    .await
    .unwrap();
    assert_eq!(done, 1);
    assert_eq!(
        reload(&kit, auth.id).await.status(),
        PaymentStatus::Canceled
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captured_amounts_and_refund_counters_move_only_as_the_contract_says() {
    let (kit, pool, merchant) = setup().await;
    let paid = succeeded(&kit, &merchant, 1000).await;
    let pending = stored_payment(&kit, &merchant, 500).await;
    for (sql, id, expected) in [
        (
            "UPDATE payments SET amount_captured = amount_captured - 1 WHERE id = $1",
            paid.id,
            "payments_capture_once",
        ),
        // Refund counters move only while SUCCESS.
        (
            "UPDATE payments SET amount_reserved = 1 WHERE id = $1",
            pending.id,
            "payments_refund_counters",
        ),
        // Reservations never pass what was captured.
        (
            "UPDATE payments SET amount_reserved = amount_captured + 1 WHERE id = $1",
            paid.id,
            "payments_refunds_within_captured",
        ),
        // Refunded never passes reserved.
        (
            "UPDATE payments SET amount_refunded = 1 WHERE id = $1",
            paid.id,
            "payments_refunds_within_captured",
        ),
    ] {
        let result = run(&pool, sql, id.as_uuid()).await;
        assert_eq!(refusal(result), check(expected), "{sql}");
    }
    // The lawful neighbour: a reservation of exactly what was captured, through the port.
    stored_refund(&kit, &paid, 1000).await;
    assert_eq!(reload(&kit, paid.id).await.refundable(), 0);
    assert_books_clean(&kit).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_that_are_not_the_sums_of_the_refunds_are_refused_at_commit() {
    let (kit, pool, merchant) = setup().await;
    let paid = succeeded(&kit, &merchant, 1000).await;
    let refund = stored_refund(&kit, &paid, 300).await;

    // Reserved is Σ refunds not FAILED.
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("UPDATE payments SET amount_reserved = 200 WHERE id = $1")
        .bind(paid.id.as_uuid())
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(
        refusal(tx.commit().await),
        check("payments_counters_match_refunds")
    );
    // A refund inserted without its reservation.
    let mut tx = pool.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO refunds (id, payment_id, merchant_account, funding_account, \
         owner_merchant, amount, currency, status, touched_at, created_at, updated_at) \
         SELECT $2, payment_id, merchant_account, funding_account, owner_merchant, 50, \
         currency, 'PENDING', now(), now(), now() FROM refunds WHERE id = $1",
    )
    .bind(refund.id.as_uuid())
    .bind(Uuid::now_v7())
    .execute(&mut *tx)
    .await
    .unwrap();
    assert_eq!(
        refusal(tx.commit().await),
        check("payments_counters_match_refunds")
    );

    // Refunded is Σ SUCCESS refunds: a posted refund that does not count is refused ...
    let (_, held) = claim_refund(&kit, refund.id).await;
    let mut tx = pool.begin().await.unwrap();
    post_refund_by_hand(&mut tx, &held, 300).await.unwrap();
    succeed_refund_by_hand(&mut tx, &held, 0).await;
    assert_eq!(
        refusal(tx.commit().await),
        check("payments_counters_match_refunds")
    );
    // ... and one that counts another amount too.
    let mut tx = pool.begin().await.unwrap();
    post_refund_by_hand(&mut tx, &held, 300).await.unwrap();
    succeed_refund_by_hand(&mut tx, &held, 200).await;
    assert_eq!(
        refusal(tx.commit().await),
        check("payments_counters_match_refunds")
    );
    // The lawful neighbour: counted exactly.
    let mut tx = pool.begin().await.unwrap();
    post_refund_by_hand(&mut tx, &held, 300).await.unwrap();
    succeed_refund_by_hand(&mut tx, &held, 300).await;
    tx.commit().await.unwrap();
    let after = reload(&kit, paid.id).await;
    assert_eq!(
        (after.amount_refunded(), after.amount_reserved()),
        (300, 300)
    );
    assert_books_clean(&kit).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_posting_must_post_its_success_refund_once() {
    let (kit, pool, merchant) = setup().await;
    let paid = succeeded(&kit, &merchant, 1000).await;
    let pending = stored_refund(&kit, &paid, 300).await;

    // A posting of a refund that is not SUCCESS.
    let mut tx = pool.begin().await.unwrap();
    post_refund_by_hand(&mut tx, &pending, 300).await.unwrap();
    assert_eq!(
        refusal(tx.commit().await),
        check("ledger_transaction_posts_refund")
    );
    // A posting of another amount than its refund's.
    let (lease, held) = claim_refund(&kit, pending.id).await;
    let mut tx = pool.begin().await.unwrap();
    post_refund_by_hand(&mut tx, &held, 299).await.unwrap();
    succeed_refund_by_hand(&mut tx, &held, 300).await;
    assert_eq!(
        refusal(tx.commit().await),
        check("ledger_transaction_refund_amount")
    );
    // SUCCESS without its posting.
    let mut tx = pool.begin().await.unwrap();
    succeed_refund_by_hand(&mut tx, &held, 300).await;
    assert_eq!(
        refusal(tx.commit().await),
        check("refunds_success_is_posted")
    );
    // Posted once through the port; a second posting is refused at once.
    settle_one(&kit, refund_posting(&held, lease))
        .await
        .unwrap();
    assert_eq!(
        reload_refund(&kit, pending.id).await.status(),
        RefundStatus::Success
    );
    let mut tx = pool.begin().await.unwrap();
    let again = post_refund_by_hand(&mut tx, &held, 300).await;
    assert_eq!(
        refusal(again),
        (
            "23505".to_owned(),
            "ledger_transactions_one_per_refund".to_owned()
        )
    );
    drop(tx);
    assert_books_clean(&kit).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_charge_posts_exactly_the_captured_amount() {
    let (kit, pool, merchant) = setup().await;
    let held = capturing(&kit, &merchant, 1000, 600).await;
    let id = held.id.as_uuid();
    let accounts = (
        held.funding_account.as_uuid(),
        held.merchant_account.as_uuid(),
    );
    let succeed = "UPDATE payments SET status = 'SUCCESS', amount_captured = 600, \
         capture_requested = NULL, lease_id = NULL, lease_until = NULL WHERE id = $1";
    // The whole authorization posted for a capture of 600.
    let mut tx = pool.begin().await.unwrap();
    sqlx::query(succeed)
        .bind(id)
        .execute(&mut *tx)
        .await
        .unwrap();
    post_by_hand(&mut tx, (id, None), accounts, 1000)
        .await
        .unwrap();
    assert_eq!(
        refusal(tx.commit().await),
        check("ledger_transaction_payment_amount")
    );
    // The lawful neighbour: 600.
    let mut tx = pool.begin().await.unwrap();
    sqlx::query(succeed)
        .bind(id)
        .execute(&mut *tx)
        .await
        .unwrap();
    event_by_hand(&mut tx, "payment.succeeded", id, None).await;
    post_by_hand(&mut tx, (id, None), accounts, 600)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // A second charge posting of it.
    let mut tx = pool.begin().await.unwrap();
    let again = post_by_hand(&mut tx, (id, None), accounts, 600).await;
    assert_eq!(
        refusal(again),
        (
            "23505".to_owned(),
            "ledger_transactions_one_charge_per_payment".to_owned()
        )
    );
    drop(tx);
    assert_eq!(reload(&kit, held.id).await.amount_captured(), 600);
    assert_books_clean(&kit).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refund_transitions_outside_the_table_are_refused() {
    let (kit, pool, merchant) = setup().await;
    let paid = succeeded(&kit, &merchant, 1000).await;
    let pending = stored_refund(&kit, &paid, 100).await.id.as_uuid();
    let done = stored_refund(&kit, &paid, 100).await;
    claim_and_post_refund(&kit, done.id).await.unwrap();
    let done = done.id.as_uuid();
    let legal = check("refunds_legal_transition");
    for (sql, id, expected) in [
        (
            "UPDATE refunds SET status = 'SUCCESS' WHERE id = $1",
            pending,
            legal.clone(),
        ),
        (
            "UPDATE refunds SET status = 'FAILED', failure_reason = 'processing_error' WHERE id = $1",
            pending,
            legal.clone(),
        ),
        (
            "UPDATE refunds SET status = 'FAILED', failure_reason = 'processing_error' WHERE id = $1",
            done,
            legal.clone(),
        ),
        (
            "UPDATE refunds SET status = 'PROCESSING', lease_id = gen_random_uuid(), \
             lease_until = now() WHERE id = $1",
            done,
            legal.clone(),
        ),
        (
            "UPDATE refunds SET status = 'PENDING' WHERE id = $1",
            done,
            legal.clone(),
        ),
        (
            "UPDATE refunds SET amount = 1 WHERE id = $1",
            pending,
            check("refunds_immutable"),
        ),
        (
            "UPDATE refunds SET metadata = '{\"a\":\"b\"}' WHERE id = $1",
            pending,
            check("refunds_immutable"),
        ),
        (
            "DELETE FROM refunds WHERE id = $1",
            pending,
            check("refunds_permanent"),
        ),
        // Born PENDING, and of its payment's accounts.
        (
            "INSERT INTO refunds (id, payment_id, merchant_account, funding_account, \
             owner_merchant, amount, currency, status, failure_reason, touched_at, created_at, \
             updated_at) SELECT gen_random_uuid(), payment_id, merchant_account, \
             funding_account, owner_merchant, 1, currency, 'FAILED', 'processing_error', now(), \
             now(), now() FROM refunds WHERE id = $1",
            pending,
            check("refunds_born_pending"),
        ),
        (
            "INSERT INTO refunds (id, payment_id, merchant_account, funding_account, \
             owner_merchant, amount, currency, status, touched_at, created_at, updated_at) \
             SELECT gen_random_uuid(), payment_id, funding_account, merchant_account, \
             owner_merchant, 1, currency, 'PENDING', now(), now(), now() FROM refunds WHERE id = $1",
            pending,
            check("refunds_match_payment"),
        ),
    ] {
        assert_eq!(refusal(run(&pool, sql, id).await), expected, "{sql}");
    }
    // The lawful neighbour: PENDING -> PROCESSING by hand.
    let claimed = run(
        &pool,
        "UPDATE refunds SET status = 'PROCESSING', lease_id = gen_random_uuid(), \
         lease_until = now() + interval '1 minute' WHERE id = $1",
        pending,
    )
    .await
    .unwrap();
    assert_eq!(claimed, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_outside_its_bounds_is_refused() {
    let (kit, pool, merchant) = setup().await;
    let model = stored_payment(&kit, &merchant, 300).await.id.as_uuid();
    let paid = succeeded(&kit, &merchant, 1000).await;
    let refund = stored_refund(&kit, &paid, 100).await.id.as_uuid();
    let insert_payment = "INSERT INTO payments (id, merchant_account, funding_account, \
         owner_merchant, amount, currency, source, description, metadata, status, touched_at, \
         created_at, updated_at) SELECT gen_random_uuid(), merchant_account, funding_account, \
         owner_merchant, amount, currency, source, description, $2::jsonb, 'PENDING', now(), \
         now(), now() FROM payments WHERE id = $1";
    // A refund of 0 reserved is refused by its commit check, not before its metadata.
    let insert_refund = "INSERT INTO refunds (id, payment_id, merchant_account, funding_account, \
         owner_merchant, amount, currency, metadata, status, touched_at, created_at, updated_at) \
         SELECT gen_random_uuid(), payment_id, merchant_account, funding_account, \
         owner_merchant, 1, currency, $2::jsonb, 'PENDING', now(), now(), now() \
         FROM refunds WHERE id = $1";
    let object = |pairs: Vec<(String, serde_json::Value)>| {
        serde_json::Value::Object(pairs.into_iter().collect()).to_string()
    };
    let text = |s: &str| serde_json::Value::String(s.to_owned());
    let many = |n: usize| object((0..n).map(|i| (format!("k{i}"), text("v"))).collect());
    let refused = [
        "[]".to_owned(),
        "\"orderId\"".to_owned(),
        "null".to_owned(),
        many(21),
        object(vec![("k".repeat(41), text(""))]),
        object(vec![(String::new(), text("v"))]),
        object(vec![("a/b".to_owned(), text("v"))]),
        object(vec![("ключ".to_owned(), text("v"))]),
        object(vec![("k".to_owned(), serde_json::json!(1))]),
        object(vec![("k".to_owned(), serde_json::Value::Null)]),
        object(vec![("k".to_owned(), serde_json::json!({"a": "b"}))]),
        object(vec![("k".to_owned(), text(&"é".repeat(501)))]),
    ];
    for (sql, id, constraint) in [
        (insert_payment, model, "payments_metadata_bounds"),
        (insert_refund, refund, "refunds_metadata_bounds"),
    ] {
        for metadata in &refused {
            let result = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
                .bind(id)
                .bind(metadata)
                .execute(&pool)
                .await;
            assert_eq!(refusal(result), check(constraint), "{metadata}");
        }
        // A NUL cannot be stored at all: jsonb refuses the escape.
        let nul = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
            .bind(id)
            .bind(r#"{"k":"a\u0000b"}"#)
            .execute(&pool)
            .await;
        assert_eq!(refusal(nul).0, "22P05");
    }
    // The lawful neighbours: every bound at its edge (a payment insert).
    for metadata in [
        many(20),
        object(vec![("k".repeat(40), text(""))]),
        object(vec![("A-z_0.9".to_owned(), text(&"é".repeat(500)))]),
        "{}".to_owned(),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(insert_payment.to_owned()))
            .bind(model)
            .bind(&metadata)
            .execute(&pool)
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_role_cannot_edit_what_a_payment_or_refund_is() {
    let db = TestDatabase::create().await;
    let login = db.server_login().await;
    let kit = db.kit_as(&login).await;
    let merchant = onboard(&kit, Currency::USD).await;
    let paid = succeeded(&kit, &merchant, 1000).await;
    let refund = stored_refund(&kit, &paid, 100).await;
    claim_and_post_refund(&kit, refund.id).await.unwrap();
    let mut server = sqlx::PgConnection::connect(login.url()).await.unwrap();
    for sql in [
        "UPDATE refunds SET amount = 1",
        "UPDATE refunds SET payment_id = id",
        "UPDATE refunds SET metadata = '{}'",
        "DELETE FROM refunds",
        "TRUNCATE refunds",
        "UPDATE payments SET metadata = '{}'",
        "UPDATE payments SET capture_method = 'manual'",
        "ALTER TABLE refunds DISABLE TRIGGER ALL",
    ] {
        let result = sqlx::query(sql).execute(&mut server).await;
        assert_eq!(refusal(result).0, "42501", "{sql}");
    }
    let _ = server.close().await;
    assert_eq!(reload(&kit, paid.id).await.amount_refunded(), 100);
    let again = claim_and_post(&kit, stored_payment(&kit, &merchant, 5).await.id).await;
    assert_eq!(again.status(), PaymentStatus::Success);
    assert_books_clean(&kit).await;
}
