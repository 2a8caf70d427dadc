//! The database guards the books on its own: direct SQL that would break them is refused, a
//! payment is posted once however often its job runs, and 32 workers on 32 connections settle
//! into one merchant without deadlock. Each test has a database of its own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use atomic_core::id::PaymentId;
use atomic_core::ledger::Transfer;
use atomic_core::money::Currency;
use atomic_core::ports::{BeginOutcome, LeaseId, SettleOutcome, Settlement, SettlementResult};
use atomic_core::testkit::outbox::stored_endpoint;
use atomic_core::testkit::{StoreKit, assert_books_clean, onboard, stored_payment};
use atomic_core::time::Timestamp;
use atomic_core::{Error, Payment};
use atomic_postgres::testkit::TestDatabase;
use sqlx::PgPool;
use uuid::Uuid;

const LEASE: Duration = Duration::from_secs(30);

/// Claims and settles `payment` as a worker would; returns the outcome.
async fn settle(kit: &StoreKit, payment: &Payment) -> Result<SettleOutcome, Error> {
    let lease = LeaseId::generate();
    let held = match begin(kit, payment.id, lease).await? {
        BeginOutcome::Claimed(held) => held,
        BeginOutcome::Finished(done) => {
            assert!(done.status().is_terminal(), "{done:?}");
            return Ok(SettleOutcome::NotHeld);
        }
        other => panic!("unexpected {other:?}"),
    };
    let transfer = Transfer::for_payment(&held, Timestamp::now()).unwrap();
    settle_one(
        kit,
        Settlement::Payment {
            payment_id: payment.id,
            lease,
            result: SettlementResult::Posted(transfer),
        },
    )
    .await
}

/// Claims one payment under `lease`.
async fn begin(kit: &StoreKit, id: PaymentId, lease: LeaseId) -> Result<BeginOutcome, Error> {
    let mut outcomes = kit
        .store
        .settlement()
        .begin_payments(&[id], lease, LEASE)
        .await?;
    Ok(outcomes.pop().expect("one outcome"))
}

/// Settles one settlement on its own.
async fn settle_one(kit: &StoreKit, settlement: Settlement) -> Result<SettleOutcome, Error> {
    kit.store
        .settlement()
        .settle(&[settlement])
        .await
        .pop()
        .expect("one result")
}

async fn transactions_of(pool: &PgPool, payment: &Payment) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM ledger_transactions WHERE payment_id = $1")
        .bind(payment.id.as_uuid())
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn funding_of(pool: &PgPool, payment: &Payment) -> Uuid {
    sqlx::query_scalar("SELECT funding_account FROM payments WHERE id = $1")
        .bind(payment.id.as_uuid())
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Hand-written SQL that moves `payment` to SUCCESS (through PROCESSING) in `tx`, posting
/// nothing: the deferred checks judge it at commit.
async fn mark_success(tx: &mut sqlx::PgConnection, payment: &Payment) {
    sqlx::query(
        "UPDATE payments SET status = 'PROCESSING', lease_id = $2, \
         lease_until = now() + interval '1 minute' WHERE id = $1",
    )
    .bind(payment.id.as_uuid())
    .bind(Uuid::now_v7())
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query(
        "UPDATE payments SET status = 'SUCCESS', amount_captured = amount, lease_id = NULL, \
         lease_until = NULL WHERE id = $1",
    )
    .bind(payment.id.as_uuid())
    .execute(&mut *tx)
    .await
    .unwrap();
}

/// Hand-written SQL that posts `amount` for `payment` in `tx`: its ledger transaction from
/// `funding` to `credit`, then one entry per `(account, direction)` in `sides`.
async fn post_by_hand(
    tx: &mut sqlx::PgConnection,
    payment: &Payment,
    (funding, credit): (Uuid, Uuid),
    amount: i64,
    sides: &[(Uuid, &str)],
) {
    let transaction = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO ledger_transactions \
         (id, payment_id, debit_account, credit_account, amount, currency, created_at) \
         VALUES ($1, $2, $3, $4, $5, 'USD', now())",
    )
    .bind(transaction)
    .bind(payment.id.as_uuid())
    .bind(funding)
    .bind(credit)
    .bind(amount)
    .execute(&mut *tx)
    .await
    .unwrap();
    for (account, direction) in sides {
        sqlx::query(
            "INSERT INTO ledger_entries \
             (id, transaction_id, payment_id, account_id, direction, amount, currency, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 'USD', now())",
        )
        .bind(Uuid::now_v7())
        .bind(transaction)
        .bind(payment.id.as_uuid())
        .bind(account)
        .bind(direction)
        .bind(amount)
        .execute(&mut *tx)
        .await
        .unwrap();
    }
}

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

/// Holds the kit, and with it the test database, for as long as the test runs.
struct Posted {
    kit: StoreKit,
    pool: PgPool,
    payment: Payment,
    merchant_account: Uuid,
}

/// A fresh database with one SUCCESS payment of 500 posted into a merchant's account.
async fn posted() -> Posted {
    let db = TestDatabase::create().await;
    let pool = db.store().pool().clone();
    let kit = db.kit();
    let merchant = onboard(&kit, Currency::USD).await;
    let payment = stored_payment(&kit, &merchant, 500).await;
    assert!(matches!(
        settle(&kit, &payment).await.unwrap(),
        SettleOutcome::Payment(_)
    ));
    Posted {
        kit,
        pool,
        payment,
        merchant_account: merchant.account.id.as_uuid(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_workers_on_their_own_connections_settle_into_one_merchant() {
    let kit = TestDatabase::create_with(|c| c.max_connections = 34)
        .await
        .kit();
    atomic_core::testkit::ledger::concurrent_settlements_into_one_account_add_up_exactly(&kit)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_run_again_after_it_settled_posts_nothing_more() {
    let Posted {
        kit, pool, payment, ..
    } = posted().await;
    for _ in 0..3 {
        assert_eq!(
            settle(&kit, &payment).await.unwrap(),
            SettleOutcome::NotHeld
        );
    }
    assert_eq!(transactions_of(&pool, &payment).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_job_settled_by_many_workers_at_once_posts_once() {
    let db = TestDatabase::create_with(|c| c.max_connections = 16).await;
    let pool = db.store().pool().clone();
    let kit = db.kit();
    let merchant = onboard(&kit, Currency::USD).await;
    for round in 0..5 {
        let payment = stored_payment(&kit, &merchant, 100 + round).await;
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(16));
        let mut workers = Vec::new();
        for _ in 0..16 {
            let (kit, payment, barrier) = (kit.clone(), payment.clone(), barrier.clone());
            workers.push(tokio::spawn(async move {
                barrier.wait().await;
                // A lease held by another worker is Busy: that worker settles it.
                let lease = LeaseId::generate();
                match begin(&kit, payment.id, lease).await {
                    Ok(BeginOutcome::Claimed(held)) => {
                        let transfer = Transfer::for_payment(&held, Timestamp::now()).unwrap();
                        let outcome = settle_one(
                            &kit,
                            Settlement::Payment {
                                payment_id: payment.id,
                                lease,
                                result: SettlementResult::Posted(transfer),
                            },
                        )
                        .await
                        .unwrap();
                        usize::from(matches!(outcome, SettleOutcome::Payment(_)))
                    }
                    Ok(_) => 0,
                    Err(e) => panic!("no worker may fail: {e}"),
                }
            }));
        }
        let mut settled = 0;
        for worker in workers {
            settled += worker.await.unwrap();
        }
        assert_eq!(settled, 1, "round {round}");
        assert_eq!(transactions_of(&pool, &payment).await, 1, "round {round}");
    }
    atomic_core::testkit::assert_books_clean(&kit).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_posting_of_a_payment_is_refused_by_the_database() {
    let Posted {
        kit: _kit,
        pool,
        payment,
        merchant_account,
    } = posted().await;
    let funding = funding_of(&pool, &payment).await;
    let result = sqlx::query(
        "INSERT INTO ledger_transactions \
         (id, payment_id, debit_account, credit_account, amount, currency, created_at) \
         VALUES ($1, $2, $3, $4, 500, 'USD', now())",
    )
    .bind(Uuid::now_v7())
    .bind(payment.id.as_uuid())
    .bind(funding)
    .bind(merchant_account)
    .execute(&pool)
    .await;
    assert_eq!(
        refusal(result),
        (
            "23505".to_owned(),
            "ledger_transactions_one_charge_per_payment".to_owned()
        )
    );
    assert_eq!(transactions_of(&pool, &payment).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unbalanced_posting_is_refused_at_commit() {
    let db = TestDatabase::create().await;
    let pool = db.store().pool().clone();
    let kit = db.kit();
    let merchant = onboard(&kit, Currency::USD).await;
    let payment = stored_payment(&kit, &merchant, 700).await;
    let funding = funding_of(&pool, &payment).await;
    // Hand-written SQL that marks the payment SUCCESS and posts only its CREDIT side.
    let mut tx = pool.begin().await.unwrap();
    mark_success(&mut tx, &payment).await;
    let credit = merchant.account.id.as_uuid();
    post_by_hand(
        &mut tx,
        &payment,
        (funding, credit),
        700,
        &[(credit, "CREDIT")],
    )
    .await;
    assert_eq!(
        refusal(tx.commit().await),
        ("23514".to_owned(), "ledger_transaction_balanced".to_owned())
    );
    assert_eq!(transactions_of(&pool, &payment).await, 0);
    let status: String = sqlx::query_scalar("SELECT status FROM payments WHERE id = $1")
        .bind(payment.id.as_uuid())
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(status, "PENDING", "the whole transaction rolled back");
}

/// A posting's accounts are its payment's, checked at commit (no foreign key names them): a
/// balanced posting into another merchant's account, or into an account that does not exist,
/// is refused and leaves nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_posting_to_accounts_not_its_payments_is_refused_at_commit() {
    let db = TestDatabase::create().await;
    let pool = db.store().pool().clone();
    let kit = db.kit();
    let merchant = onboard(&kit, Currency::USD).await;
    let other = onboard(&kit, Currency::USD).await;
    for credit in [other.account.id.as_uuid(), Uuid::now_v7()] {
        let payment = stored_payment(&kit, &merchant, 700).await;
        let funding = funding_of(&pool, &payment).await;
        let mut tx = pool.begin().await.unwrap();
        mark_success(&mut tx, &payment).await;
        let sides = [(funding, "DEBIT"), (credit, "CREDIT")];
        post_by_hand(&mut tx, &payment, (funding, credit), 700, &sides).await;
        sqlx::query("UPDATE accounts SET balance = balance + $2 WHERE id = $1")
            .bind(credit)
            .bind(700_i64)
            .execute(&mut *tx)
            .await
            .unwrap();
        assert_eq!(
            refusal(tx.commit().await),
            (
                "23514".to_owned(),
                "ledger_transaction_posts_success".to_owned()
            ),
            "credit to {credit}"
        );
        assert_eq!(transactions_of(&pool, &payment).await, 0);
    }
    assert_books_clean(&kit).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_posting_of_another_amount_than_its_payment_is_refused_at_commit() {
    let db = TestDatabase::create().await;
    let pool = db.store().pool().clone();
    let kit = db.kit();
    let merchant = onboard(&kit, Currency::USD).await;
    let payment = stored_payment(&kit, &merchant, 700).await;
    let funding = funding_of(&pool, &payment).await;
    // A balanced posting of 701 for a payment of 700.
    let mut tx = pool.begin().await.unwrap();
    mark_success(&mut tx, &payment).await;
    let credit = merchant.account.id.as_uuid();
    let sides = [(funding, "DEBIT"), (credit, "CREDIT")];
    post_by_hand(&mut tx, &payment, (funding, credit), 701, &sides).await;
    sqlx::query("UPDATE accounts SET balance = balance + 701 WHERE id = $1")
        .bind(merchant.account.id.as_uuid())
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(
        refusal(tx.commit().await),
        (
            "23514".to_owned(),
            "ledger_transaction_payment_amount".to_owned()
        )
    );
    assert_eq!(transactions_of(&pool, &payment).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_third_entry_on_a_posting_is_refused() {
    let Posted {
        kit: _kit,
        pool,
        payment,
        merchant_account,
    } = posted().await;
    let transaction: Uuid =
        sqlx::query_scalar("SELECT id FROM ledger_transactions WHERE payment_id = $1")
            .bind(payment.id.as_uuid())
            .fetch_one(&pool)
            .await
            .unwrap();
    // A posting is one DEBIT and one CREDIT; nothing can be added to it afterwards.
    let result = sqlx::query(
        "INSERT INTO ledger_entries \
         (id, transaction_id, payment_id, account_id, direction, amount, currency, created_at) \
         VALUES ($1, $2, $3, $4, 'CREDIT', 499, 'USD', now())",
    )
    .bind(Uuid::now_v7())
    .bind(transaction)
    .bind(payment.id.as_uuid())
    .bind(merchant_account)
    .execute(&pool)
    .await;
    assert_eq!(
        refusal(result),
        ("23505".to_owned(), "ledger_entries_one_per_side".to_owned())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overdrawing_a_merchant_account_is_refused() {
    let Posted {
        kit: _kit,
        pool,
        merchant_account,
        ..
    } = posted().await;
    let result = sqlx::query("UPDATE accounts SET balance = balance - 501 WHERE id = $1")
        .bind(merchant_account)
        .execute(&pool)
        .await;
    assert_eq!(
        refusal(result),
        ("23514".to_owned(), "accounts_non_negative".to_owned())
    );
    let balance: i64 = sqlx::query_scalar("SELECT balance FROM accounts WHERE id = $1")
        .bind(merchant_account)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(balance, 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_is_append_only() {
    let Posted {
        kit: _kit,
        pool,
        payment,
        ..
    } = posted().await;
    for sql in [
        "UPDATE ledger_entries SET amount = 1 WHERE payment_id = $1",
        "DELETE FROM ledger_entries WHERE payment_id = $1",
        "UPDATE ledger_transactions SET amount = 1 WHERE payment_id = $1",
        "DELETE FROM ledger_transactions WHERE payment_id = $1",
    ] {
        let result = sqlx::query(sql)
            .bind(payment.id.as_uuid())
            .execute(&pool)
            .await;
        assert_eq!(
            refusal(result),
            ("23514".to_owned(), "ledger_append_only".to_owned()),
            "{sql}"
        );
    }
    for sql in [
        "TRUNCATE ledger_entries",
        "TRUNCATE ledger_transactions CASCADE",
    ] {
        let result = sqlx::query(sql).execute(&pool).await;
        assert_eq!(refusal(result).1, "ledger_append_only", "{sql}");
    }
    let entries: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger_entries")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(entries, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_payment_cannot_change_or_disappear() {
    let Posted {
        kit, pool, payment, ..
    } = posted().await;
    for (sql, constraint) in [
        (
            "UPDATE payments SET status = 'PENDING' WHERE id = $1",
            "payments_legal_transition",
        ),
        (
            "UPDATE payments SET status = 'FAILED', failure_reason = 'card_declined' WHERE id = $1",
            "payments_legal_transition",
        ),
        ("DELETE FROM payments WHERE id = $1", "payments_permanent"),
    ] {
        let result = sqlx::query(sql)
            .bind(payment.id.as_uuid())
            .execute(&pool)
            .await;
        assert_eq!(refusal(result).1, constraint, "{sql}");
    }
    // What a payment is never changes, even while it is open.
    let merchant = onboard(&kit, Currency::USD).await;
    let pending = stored_payment(&kit, &merchant, 10).await;
    for sql in [
        "UPDATE payments SET amount = 1 WHERE id = $1",
        "UPDATE payments SET source = 'tok_other' WHERE id = $1",
        "UPDATE payments SET merchant_account = funding_account WHERE id = $1",
    ] {
        let result = sqlx::query(sql)
            .bind(pending.id.as_uuid())
            .execute(&pool)
            .await;
        assert_eq!(refusal(result).1, "payments_immutable", "{sql}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn success_without_a_posting_is_refused_at_commit() {
    let db = TestDatabase::create().await;
    let pool = db.store().pool().clone();
    let kit = db.kit();
    let merchant = onboard(&kit, Currency::USD).await;
    let payment = stored_payment(&kit, &merchant, 900).await;
    let mut tx = pool.begin().await.unwrap();
    mark_success(&mut tx, &payment).await;
    assert_eq!(refusal(tx.commit().await).1, "payments_success_is_posted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_being_voided_can_never_succeed_and_the_mark_never_goes() {
    let db = TestDatabase::create().await;
    let pool = db.store().pool().clone();
    let kit = db.kit();
    let merchant = onboard(&kit, Currency::USD).await;
    let payment = stored_payment(&kit, &merchant, 900).await;
    let id = payment.id.as_uuid();
    // Only a payment being processed can be marked.
    let early = sqlx::query("UPDATE payments SET voiding_at = now() WHERE id = $1")
        .bind(id)
        .execute(&pool)
        .await;
    assert_eq!(refusal(early).1, "payments_voiding_permanent");
    sqlx::query(
        "UPDATE payments SET status = 'PROCESSING', lease_id = $2, \
         lease_until = now() + interval '1 minute' WHERE id = $1",
    )
    .bind(id)
    .bind(Uuid::now_v7())
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("UPDATE payments SET voiding_at = now() WHERE id = $1")
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
    let success = sqlx::query(
        "UPDATE payments SET status = 'SUCCESS', amount_captured = amount, lease_id = NULL, \
         lease_until = NULL WHERE id = $1",
    )
    .bind(id)
    .execute(&pool)
    .await;
    assert_eq!(refusal(success).1, "payments_voided_only_fails");
    let cleared = sqlx::query("UPDATE payments SET voiding_at = NULL WHERE id = $1")
        .bind(id)
        .execute(&pool)
        .await;
    assert_eq!(refusal(cleared).1, "payments_voiding_permanent");
    // Failing it is what remains.
    sqlx::query(
        "UPDATE payments SET status = 'FAILED', failure_reason = 'processing_error', \
         lease_id = NULL, lease_until = NULL WHERE id = $1",
    )
    .bind(id)
    .execute(&pool)
    .await
    .unwrap();
}

/// A batch claim whose answer cannot be read takes no payment out of play: the leases it took
/// end with it, so the next delivery claims at once instead of waiting for the sweep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_claim_whose_answer_cannot_be_read_leaves_nothing_claimed() {
    let db = TestDatabase::create().await;
    let pool = db.store().pool().clone();
    let kit = db.kit();
    let merchant = onboard(&kit, Currency::USD).await;
    let free = stored_payment(&kit, &merchant, 700).await;
    // A payment held by another worker, whose row no longer reads as a payment (a source that
    // is not a card token): the claim leaves it, and reading it back fails.
    let unreadable = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO payments (id, merchant_account, funding_account, owner_merchant, amount, \
         currency, source, description, created_by, status, lease_id, lease_until, \
         touched_at, created_at, updated_at) \
         SELECT $2, merchant_account, funding_account, owner_merchant, amount, currency, \
         'not a token', description, created_by, 'PENDING', NULL, NULL, now(), now(), now() \
         FROM payments WHERE id = $1",
    )
    .bind(free.id.as_uuid())
    .bind(unreadable)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "UPDATE payments SET status = 'PROCESSING', lease_id = $2, \
         lease_until = now() + interval '1 hour' WHERE id = $1",
    )
    .bind(unreadable)
    .bind(Uuid::now_v7())
    .execute(&pool)
    .await
    .unwrap();

    let ids = [free.id, atomic_core::id::PaymentId::from(unreadable)];
    let claim = kit
        .store
        .settlement()
        .begin_payments(&ids, LeaseId::generate(), LEASE)
        .await;
    assert!(
        claim.is_err(),
        "an unreadable row must fail the claim: {claim:?}"
    );
    let again = begin(&kit, free.id, LeaseId::generate()).await.unwrap();
    assert!(
        matches!(&again, BeginOutcome::Claimed(p) if p.id == free.id),
        "the failed claim left the payment held: {again:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_counts_a_change_without_its_event_or_its_delivery() {
    let db = TestDatabase::create().await;
    let pool = db.store().pool().clone();
    let kit = db.kit();
    let merchant = onboard(&kit, Currency::USD).await;
    stored_endpoint(&kit, merchant.account.owner, &["*"]).await;
    let payment = stored_payment(&kit, &merchant, 500).await;
    settle(&kit, &payment).await.unwrap();
    let audit = kit.audit.clone().unwrap();
    let report = audit.audit(LEASE).await.unwrap();
    assert_eq!((report.outbox_mismatch, report.delivery_mismatch), (0, 0));

    sqlx::query("UPDATE webhook_deliveries SET status = 'DELIVERED', next_attempt_at = NULL, last_status_code = 302")
        .execute(&pool)
        .await
        .unwrap();
    let report = audit.audit(LEASE).await.unwrap();
    assert_eq!(
        (report.outbox_mismatch, report.delivery_mismatch),
        (0, 1),
        "DELIVERED without a 2xx"
    );
    sqlx::query("DELETE FROM webhook_deliveries")
        .execute(&pool)
        .await
        .unwrap();
    let report = audit.audit(LEASE).await.unwrap();
    assert_eq!(
        (report.outbox_mismatch, report.delivery_mismatch),
        (0, 1),
        "a receiver without its delivery"
    );
    sqlx::query("DELETE FROM events")
        .execute(&pool)
        .await
        .unwrap();
    let report = audit.audit(LEASE).await.unwrap();
    assert_eq!(
        report.outbox_mismatch, 1,
        "a SUCCESS payment without its event"
    );
}
