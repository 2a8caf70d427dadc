//! Group-committed idempotency claims never leave a key held by nobody: a claim a writer took
//! is answered to its caller however long the writer took, and a claim whose caller is gone
//! (its request dropped) is released by the writer. A row lock on the key's expired record
//! stalls the writer's statement, so the test decides when the claim commits.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use atomic_core::Principal;
use atomic_core::idempotency::{ClaimOutcome, Fingerprint, IdempotencyKey, IdempotencyPolicy};
use atomic_core::ports::IdempotencyStore;
use atomic_postgres::PgStore;
use atomic_postgres::testkit::TestDatabase;
use sqlx::PgPool;

const CALL_TIMEOUT: Duration = Duration::from_millis(500);

fn fingerprint(body: &str) -> Fingerprint {
    Fingerprint::of("POST", "/api/v1/payments", body.as_bytes())
}

async fn database() -> (TestDatabase, PgStore, PgPool) {
    let db = TestDatabase::create_with(|config| {
        config.call_timeout = CALL_TIMEOUT;
        config.group_commit_writers = 1;
    })
    .await;
    let store = db.store();
    let pool = store.pool().clone();
    // The writer and its connection are up before the clock matters.
    let warm = IdempotencyKey::from_header("warm-up").unwrap();
    store
        .claim(
            Principal::Platform,
            &warm,
            fingerprint("{}"),
            IdempotencyPolicy::default(),
        )
        .await
        .unwrap();
    (db, store, pool)
}

/// An expired record of `key`, locked by the returned transaction: a claim of `key` waits on it.
async fn locked_key(
    pool: &PgPool,
    url: &str,
    key: &str,
) -> sqlx::Transaction<'static, sqlx::Postgres> {
    sqlx::query(
        "INSERT INTO idempotency_keys (scope, key, fingerprint, token, locked_at, expires_at) \
         VALUES ('00000000-0000-0000-0000-000000000000', $1, sha256('x'), gen_random_uuid(), \
                 now() - interval '2 days', now() - interval '1 day')",
    )
    .bind(key)
    .execute(pool)
    .await
    .unwrap();
    // On a connection of its own: the store's connections end idle transactions.
    let own = PgPool::connect(url).await.unwrap();
    let mut lock = own.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM idempotency_keys WHERE key = $1 FOR UPDATE")
        .bind(key)
        .execute(&mut *lock)
        .await
        .unwrap();
    lock
}

/// Waits until the writer's claim statement waits on the lock.
async fn wait_claim_blocked(pool: &PgPool, database: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 \
             AND wait_event_type = 'Lock' AND query LIKE '%INSERT INTO idempotency_keys%'",
        )
        .bind(database)
        .fetch_one(pool)
        .await
        .unwrap();
        if waiting == 1 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the claim never reached the lock"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn claim(
    store: &PgStore,
    key: &IdempotencyKey,
    body: &str,
) -> atomic_core::Result<ClaimOutcome> {
    store
        .claim(
            Principal::Platform,
            key,
            fingerprint(body),
            IdempotencyPolicy::default(),
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_taken_after_the_call_timeout_is_answered_to_its_caller() {
    let (db, store, pool) = database().await;
    let key = IdempotencyKey::from_header("slow-claim").unwrap();
    let lock = locked_key(&pool, db.url(), key.as_str()).await;
    let first = {
        let (store, key) = (store.clone(), key.clone());
        tokio::spawn(async move { claim(&store, &key, "first").await })
    };
    wait_claim_blocked(&pool, db.name()).await;
    // Hold the writer well past the call timeout (or until the caller has given up).
    let started = Instant::now();
    while started.elapsed() < CALL_TIMEOUT * 3 && !first.is_finished() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    lock.commit().await.unwrap();
    match first.await.unwrap() {
        Ok(ClaimOutcome::Acquired(_)) => {}
        // The caller was told the claim failed: then nobody may hold the key.
        other => {
            let corrected = claim(&store, &key, "corrected").await.unwrap();
            assert!(
                matches!(corrected, ClaimOutcome::Acquired(_)),
                "the first claim answered {other:?}, yet a corrected request got {corrected:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_whose_caller_left_is_released_by_its_writer() {
    let (db, store, pool) = database().await;
    let key = IdempotencyKey::from_header("abandoned-claim").unwrap();
    let lock = locked_key(&pool, db.url(), key.as_str()).await;
    let abandoned = {
        let (store, key) = (store.clone(), key.clone());
        // The request is dropped (client gone, request deadline) while the writer has it.
        tokio::spawn(async move {
            tokio::time::timeout(CALL_TIMEOUT / 2, claim(&store, &key, "first")).await
        })
    };
    wait_claim_blocked(&pool, db.name()).await;
    assert!(abandoned.await.unwrap().is_err(), "the caller gave up");
    lock.commit().await.unwrap();

    // The writer commits the claim, finds its caller gone and releases it; until then a
    // corrected request is refused as a reuse of the key. The lock timeout (60 s) is far off.
    let deadline = Instant::now() + Duration::from_secs(5);
    let outcome = loop {
        let outcome = claim(&store, &key, "corrected").await.unwrap();
        if matches!(outcome, ClaimOutcome::Acquired(_)) || Instant::now() >= deadline {
            break outcome;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        matches!(outcome, ClaimOutcome::Acquired(_)),
        "a claim nobody holds still blocks its key: {outcome:?}"
    );
}
