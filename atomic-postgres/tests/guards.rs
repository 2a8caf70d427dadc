//! Issue 13, "the database guards more": a payment is born PENDING, the server's role cannot
//! lift a guard or edit the ledger, and balances move only with their entries (L4). Each test
//! has a database of its own and, where it connects as the server does, a login role of its own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use atomic_core::ledger::Transfer;
use atomic_core::money::Currency;
use atomic_core::payment::{FailureReason, PaymentStatus};
use atomic_core::ports::{BeginOutcome, LeaseId, SettleOutcome, Settlement, SettlementResult};
use atomic_core::testkit::{StoreKit, assert_books_clean, onboard, stored_payment, system_account};
use atomic_core::time::Timestamp;
use atomic_core::{Payment, Principal};
use atomic_postgres::testkit::TestDatabase;
use sqlx::{Connection, PgPool};
use uuid::Uuid;

const LEASE: Duration = Duration::from_secs(30);

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

async fn claim(kit: &StoreKit, payment: &Payment) -> (LeaseId, Payment) {
    let lease = LeaseId::generate();
    match kit
        .store
        .settlement()
        .begin_payments(&[payment.id], lease, LEASE)
        .await
        .unwrap()
        .pop()
    {
        Some(BeginOutcome::Claimed(held)) => (lease, held),
        other => panic!("expected to claim {}, got {other:?}", payment.id),
    }
}

/// Settles one settlement on its own.
async fn settle_one(kit: &StoreKit, settlement: Settlement) -> atomic_core::Result<SettleOutcome> {
    kit.store
        .settlement()
        .settle(&[settlement])
        .await
        .pop()
        .expect("one result")
}

async fn balance_of(pool: &PgPool, account: Uuid) -> i64 {
    sqlx::query_scalar("SELECT balance FROM accounts WHERE id = $1")
        .bind(account)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn drift_rows(owner: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM ledger_balance_drift")
        .fetch_one(owner)
        .await
        .unwrap()
}

// A copy of payment $1 under id $2, inserted with the status and worker fields given.
const INSERT_LIKE: &str = "\
INSERT INTO payments (id, merchant_account, funding_account, owner_merchant, amount, currency,
    source, description, status, failure_reason, lease_id, lease_until, voiding_at, touched_at,
    created_at, updated_at)
SELECT $2, merchant_account, funding_account, owner_merchant, amount, currency, source,
    description, $3, $4, $5, $6, $7, now(), now(), now()
FROM payments WHERE id = $1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_is_inserted_pending_without_worker_fields_or_not_at_all() {
    let db = TestDatabase::create().await;
    let pool = db.store().pool().clone();
    let kit = db.kit();
    let merchant = onboard(&kit, Currency::USD).await;
    let model = stored_payment(&kit, &merchant, 300).await;
    let soon = time::OffsetDateTime::now_utc() + time::Duration::minutes(1);
    let lease = Some(Uuid::now_v7());
    type Row<'a> = (
        &'a str,
        Option<&'a str>,
        Option<Uuid>,
        Option<time::OffsetDateTime>,
        Option<time::OffsetDateTime>,
    );
    let refused: [Row; 7] = [
        // Born finished: no state machine, no posting check (that fires on UPDATE).
        ("SUCCESS", None, None, None, None),
        ("FAILED", Some("card_declined"), None, None, None),
        ("PROCESSING", None, lease, Some(soon), None),
        // Born PENDING but carrying what only the worker sets.
        ("PENDING", None, lease, Some(soon), None),
        ("PENDING", None, lease, None, None),
        ("PENDING", Some("card_declined"), None, None, None),
        ("PENDING", None, None, None, Some(soon)),
    ];
    for (status, reason, lease_id, lease_until, voiding_at) in refused {
        let result = sqlx::query(INSERT_LIKE)
            .bind(model.id.as_uuid())
            .bind(Uuid::now_v7())
            .bind(status)
            .bind(reason)
            .bind(lease_id)
            .bind(lease_until)
            .bind(voiding_at)
            .execute(&pool)
            .await;
        assert_eq!(
            refusal(result),
            ("23514".to_owned(), "payments_born_pending".to_owned()),
            "{status} {reason:?} {lease_id:?} {lease_until:?} {voiding_at:?}"
        );
    }
    // A plain PENDING copy is still a lawful insert.
    sqlx::query(INSERT_LIKE)
        .bind(model.id.as_uuid())
        .bind(Uuid::now_v7())
        .bind("PENDING")
        .bind(None::<&str>)
        .bind(None::<Uuid>)
        .bind(None::<time::OffsetDateTime>)
        .bind(None::<time::OffsetDateTime>)
        .execute(&pool)
        .await
        .unwrap();
    let (all, open): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(*) FILTER (WHERE status = 'PENDING') FROM payments")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((all, open), (2, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_role_can_neither_lift_a_guard_nor_edit_the_ledger() {
    let db = TestDatabase::create().await;
    let login = db.server_login().await;
    let owner = db.store().pool().clone();
    // The role does the server's work: onboarding, a payment, its settlement.
    let kit = db.kit_as(&login).await;
    let merchant = onboard(&kit, Currency::USD).await;
    let payment = stored_payment(&kit, &merchant, 500).await;
    let (lease, held) = claim(&kit, &payment).await;
    let transfer = Transfer::for_payment(&held, Timestamp::now()).unwrap();
    settle_one(
        &kit,
        Settlement::Payment {
            payment_id: payment.id,
            lease,
            result: SettlementResult::Posted(transfer),
        },
    )
    .await
    .unwrap();

    let mut server = sqlx::PgConnection::connect(login.url()).await.unwrap();
    for sql in [
        "ALTER TABLE ledger_entries DISABLE TRIGGER ledger_entries_append_only",
        "ALTER TABLE payments DISABLE TRIGGER ALL",
        "ALTER TABLE accounts DISABLE TRIGGER accounts_check_balance",
        "ALTER TABLE accounts DROP CONSTRAINT accounts_non_negative",
        "DROP TRIGGER payments_guard_update ON payments",
        "SET session_replication_role = replica",
        "SET ROLE postgres",
        "UPDATE ledger_entries SET amount = 1",
        "DELETE FROM ledger_entries",
        "TRUNCATE ledger_entries",
        "UPDATE ledger_transactions SET amount = 1",
        "DELETE FROM ledger_transactions",
        "UPDATE payments SET amount = 1",
        "DELETE FROM payments",
        "UPDATE accounts SET kind = 'system'",
        "DELETE FROM accounts",
        // The balance guard's own state is out of reach.
        "DELETE FROM ledger_balance_drift",
        "SELECT ledger_record_drift('{}')",
    ] {
        let result = sqlx::query(sql).execute(&mut server).await;
        assert_eq!(refusal(result).0, "42501", "{sql}");
    }
    let replica: String = sqlx::query_scalar("SHOW session_replication_role")
        .fetch_one(&mut server)
        .await
        .unwrap();
    assert_eq!(replica, "origin");
    let _ = server.close().await;

    // Nothing moved, and every guard is still on.
    let (entries, amount): (i64, Option<i64>) =
        sqlx::query_as("SELECT count(*), sum(amount)::bigint FROM ledger_entries")
            .fetch_one(&owner)
            .await
            .unwrap();
    assert_eq!((entries, amount), (2, Some(1000)));
    let disabled: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal AND tgenabled = 'D'",
    )
    .fetch_one(&owner)
    .await
    .unwrap();
    assert_eq!(disabled, 0);
    assert_books_clean(&kit).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_balance_the_journal_does_not_explain_is_refused_at_commit() {
    let db = TestDatabase::create().await;
    let login = db.server_login().await;
    let pool = db.store().pool().clone();
    let kit = db.kit();
    let merchant = onboard(&kit, Currency::USD).await;
    let world = system_account(&kit, Currency::USD).await.id.as_uuid();
    let account = merchant.account.id.as_uuid();
    let paid = stored_payment(&kit, &merchant, 500).await;
    let (lease, held) = claim(&kit, &paid).await;
    settle_one(
        &kit,
        Settlement::Payment {
            payment_id: paid.id,
            lease,
            result: SettlementResult::Posted(
                Transfer::for_payment(&held, Timestamp::now()).unwrap(),
            ),
        },
    )
    .await
    .unwrap();

    // Balances moved by hand, by the owner: more money, or money moved between accounts (the
    // sum still zero), or an account opened with money in it.
    let mut server = sqlx::PgConnection::connect(login.url()).await.unwrap();
    for (sql, as_server) in [
        (
            "UPDATE accounts SET balance = balance + 1 WHERE id = $1",
            false,
        ),
        (
            "UPDATE accounts SET balance = balance + 1 WHERE id = $1",
            true,
        ),
        (
            "UPDATE accounts SET balance = balance + CASE WHEN id = $1 THEN 7 ELSE -7 END \
             WHERE id = $1 OR kind = 'system'",
            false,
        ),
        (
            "INSERT INTO accounts (id, name, currency, kind, owner_merchant, balance, created_at) \
             SELECT gen_random_uuid(), 'gift', currency, kind, owner_merchant, 100, now() \
             FROM accounts WHERE id = $1",
            true,
        ),
    ] {
        let query = sqlx::query(sql).bind(account);
        let result = if as_server {
            query.execute(&mut server).await
        } else {
            query.execute(&pool).await
        };
        assert_eq!(
            refusal(result),
            (
                "23514".to_owned(),
                "ledger_balances_follow_journal".to_owned()
            ),
            "{sql} (as the server: {as_server})"
        );
    }
    let _ = server.close().await;

    // A posting whose entries are written but whose balances are not.
    let payment = stored_payment(&kit, &merchant, 200).await;
    let mut tx = pool.begin().await.unwrap();
    let transaction = post_by_hand(&mut tx, &payment, world, account).await;
    assert_eq!(
        refusal(tx.commit().await),
        (
            "23514".to_owned(),
            "ledger_balances_follow_journal".to_owned()
        )
    );
    // The same posting with its balances, each moved by a statement of its own (after the
    // entries): the guard judges the transaction at commit, not each statement.
    let mut tx = pool.begin().await.unwrap();
    let again = post_by_hand(&mut tx, &payment, world, account).await;
    assert_ne!(transaction, again);
    for (id, delta) in [(account, 200), (world, -200)] {
        sqlx::query("UPDATE accounts SET balance = balance + $2 WHERE id = $1")
            .bind(id)
            .bind(delta)
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();

    assert_eq!(balance_of(&pool, account).await, 700);
    assert_eq!(balance_of(&pool, world).await, -700);
    assert_eq!(drift_rows(&pool).await, 0);
    assert_books_clean(&kit).await;
}

/// Hand-written SQL that marks `payment` SUCCESS and writes its posting (transaction and both
/// entries) and its `payment.succeeded` event in `tx`, moving no balance; returns the ledger
/// transaction's id.
async fn post_by_hand(
    tx: &mut sqlx::PgConnection,
    payment: &Payment,
    world: Uuid,
    account: Uuid,
) -> Uuid {
    for sql in [
        "UPDATE payments SET status = 'PROCESSING', lease_id = gen_random_uuid(), \
         lease_until = now() + interval '1 minute' WHERE id = $1",
        "UPDATE payments SET status = 'SUCCESS', amount_captured = amount, lease_id = NULL, \
         lease_until = NULL WHERE id = $1",
    ] {
        sqlx::query(sql)
            .bind(payment.id.as_uuid())
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    sqlx::query(
        "INSERT INTO events (id, type, merchant_account, owner_merchant, payment_id, \
         created_at, body) SELECT gen_random_uuid(), 'payment.succeeded', merchant_account, \
         owner_merchant, id, updated_at, '{}' FROM payments WHERE id = $1",
    )
    .bind(payment.id.as_uuid())
    .execute(&mut *tx)
    .await
    .unwrap();
    let transaction = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO ledger_transactions \
         (id, payment_id, debit_account, credit_account, amount, currency, created_at) \
         VALUES ($1, $2, $3, $4, $5, 'USD', now())",
    )
    .bind(transaction)
    .bind(payment.id.as_uuid())
    .bind(world)
    .bind(account)
    .bind(payment.amount.minor_units())
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO ledger_entries \
         (id, transaction_id, payment_id, account_id, direction, amount, currency, created_at) \
         SELECT gen_random_uuid(), $1, $2, e.account, e.direction, $3, 'USD', now() \
         FROM (VALUES ($4::uuid, 'DEBIT'), ($5::uuid, 'CREDIT')) AS e(account, direction)",
    )
    .bind(transaction)
    .bind(payment.id.as_uuid())
    .bind(payment.amount.minor_units())
    .bind(world)
    .bind(account)
    .execute(&mut *tx)
    .await
    .unwrap();
    transaction
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_settlement_as_the_server_role_passes_every_guard() {
    let db = TestDatabase::create().await;
    let owner = db.store().pool().clone();
    // Every port connected as a login role in atomic_server, as the server runs.
    let kit = db.server_kit().await;
    let merchants = [
        onboard(&kit, Currency::USD).await,
        onboard(&kit, Currency::USD).await,
        onboard(&kit, Currency::USD).await,
    ];
    let world = system_account(&kit, Currency::USD).await.id.as_uuid();
    let mut expected = [0_i64; 3];
    for round in 0..2_i64 {
        // A batch of 64, as the worker settles: three merchants and the World account, every
        // eighth payment declined.
        let mut settlements = Vec::new();
        for i in 0..64_i64 {
            let to = usize::try_from(i % 3).unwrap();
            let amount = 100 + round * 64 + i;
            let payment = stored_payment(&kit, &merchants[to], amount).await;
            let (lease, held) = claim(&kit, &payment).await;
            let result = if i % 8 == 7 {
                SettlementResult::Failed(FailureReason::CardDeclined)
            } else {
                expected[to] += amount;
                SettlementResult::Posted(Transfer::for_payment(&held, Timestamp::now()).unwrap())
            };
            settlements.push(Settlement::Payment {
                payment_id: payment.id,
                lease,
                result,
            });
        }
        for (i, result) in kit
            .store
            .settlement()
            .settle(&settlements)
            .await
            .iter()
            .enumerate()
        {
            let status = if i % 8 == 7 {
                PaymentStatus::Failed
            } else {
                PaymentStatus::Success
            };
            assert!(
                matches!(result, Ok(SettleOutcome::Payment(p)) if p.status() == status),
                "round {round}, settlement {i}: {result:?}"
            );
        }
    }
    // And one on its own (the unbatched path).
    let single = stored_payment(&kit, &merchants[0], 77).await;
    let (lease, held) = claim(&kit, &single).await;
    let outcome = settle_one(
        &kit,
        Settlement::Payment {
            payment_id: single.id,
            lease,
            result: SettlementResult::Posted(
                Transfer::for_payment(&held, Timestamp::now()).unwrap(),
            ),
        },
    )
    .await
    .unwrap();
    assert!(matches!(outcome, SettleOutcome::Payment(_)));
    expected[0] += 77;

    for (merchant, expected) in merchants.iter().zip(expected) {
        let account = kit
            .store
            .accounts()
            .account(merchant.account.id, Principal::Platform)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(account.balance.minor_units(), expected);
    }
    assert_eq!(
        balance_of(&owner, world).await,
        -expected.iter().sum::<i64>()
    );
    assert_eq!(
        drift_rows(&owner).await,
        0,
        "a committed settlement leaves no drift"
    );
    assert_books_clean(&kit).await;
}
