//! Group commit and the call timeout: a payment insert whose caller was told 503, or whose
//! request was dropped, is never written, and one a writer already took is answered by the
//! writer, not by the timeout. A
//! row lock on the merchant's account stalls the writer's statement (its foreign-key check
//! waits for the lock), so the test decides exactly which insert is in the statement and which
//! is still queued behind it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use atomic_core::Error;
use atomic_core::Principal;
use atomic_core::money::Currency;
use atomic_core::testkit::{onboard, payment, system_account};
use atomic_postgres::testkit::TestDatabase;

const PATIENCE: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_insert_is_never_written_and_a_taken_one_is_answered_by_its_writer() {
    let db = TestDatabase::create_with(|config| {
        config.max_connections = 4;
        config.call_timeout = PATIENCE;
        config.group_commit_writers = 1;
    })
    .await;
    let database = db.name().to_owned();
    let pool = db.store().pool().clone();
    let kit = db.kit();
    let merchant = onboard(&kit, Currency::USD).await;
    let funding = system_account(&kit, Currency::USD).await;
    let (taken, queued, cancelled, after) = (
        payment(&merchant.account, &funding, 100, "tok_visa"),
        payment(&merchant.account, &funding, 200, "tok_visa"),
        payment(&merchant.account, &funding, 250, "tok_visa"),
        payment(&merchant.account, &funding, 300, "tok_visa"),
    );

    // The writer and its connections are up before the clock matters (on a loaded machine a
    // first connection can take longer than the patience).
    let warm = payment(&merchant.account, &funding, 50, "tok_visa");
    kit.store
        .payments()
        .create_payment(&warm, None)
        .await
        .unwrap();

    // Hold the merchant account's row: a payment insert's foreign-key check waits for it.
    let mut lock = pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE")
        .bind(merchant.account.id.as_uuid())
        .execute(&mut *lock)
        .await
        .unwrap();

    // The first insert is taken by the only writer, whose statement then waits on the lock.
    let ledger = kit.store.payments().clone();
    let first = {
        let (ledger, p) = (ledger.clone(), taken.clone());
        tokio::spawn(async move { ledger.create_payment(&p, None).await })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            // The writer's statement is the only one of this database that can wait on a lock
            // (its text is longer than pg_stat_activity keeps, so it is not matched by text).
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'",
        )
        .bind(&database)
        // Not on `lock`: inside a transaction pg_stat_activity keeps its first snapshot.
        .fetch_one(&pool)
        .await
        .unwrap();
        if waiting == 1 {
            break;
        }
        if Instant::now() >= deadline {
            let activity: Vec<(Option<String>, Option<String>, Option<String>)> = sqlx::query_as(
                "SELECT state, wait_event_type, left(query, 80) FROM pg_stat_activity WHERE datname = $1",
            )
            .bind(&database)
            .fetch_all(&pool)
            .await
            .unwrap();
            let result = if first.is_finished() {
                Some(first.await.unwrap())
            } else {
                None
            };
            panic!("the writer never reached the lock: first={result:?} {activity:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // The second waits behind it in the queue, runs out of patience and is withdrawn: 503.
    let second = ledger.create_payment(&queued, None).await;
    assert!(
        matches!(second, Err(Error::Unavailable(_))),
        "a queued insert past its call timeout is unavailable, got {second:?}"
    );
    // A request dropped while its insert is queued (an outer timeout, a client gone): the
    // insert goes with it.
    let dropped = tokio::time::timeout(PATIENCE / 3, ledger.create_payment(&cancelled, None)).await;
    assert!(dropped.is_err(), "cut short while queued: {dropped:?}");
    // The first is past its patience too, but its writer has it: it is still waiting.
    assert!(
        !first.is_finished(),
        "a taken insert was answered before its statement ended"
    );

    lock.rollback().await.unwrap();
    first
        .await
        .unwrap()
        .expect("the taken insert committed, so its caller is told so");

    // Inserts are taken in order: once a later one is answered, the withdrawn one was passed.
    ledger.create_payment(&after, None).await.unwrap();
    let stored = |p: &atomic_core::Payment| {
        let (ledger, id) = (ledger.clone(), p.id);
        async move {
            ledger
                .payment(id, Principal::Platform)
                .await
                .unwrap()
                .is_some()
        }
    };
    assert!(stored(&taken).await, "the taken insert is stored");
    assert!(
        !stored(&queued).await,
        "the insert its caller was told 503 about must not be stored"
    );
    assert!(
        !stored(&cancelled).await,
        "the insert of a dropped request must not be stored"
    );
    assert!(stored(&after).await);
}
