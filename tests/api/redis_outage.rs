//! Redis taken away while the server runs on PostgreSQL + Redis (issue 5, TEST-MATRIX row 8):
//! a `redis-server` child of the test on a free port is stopped, 100 payments are sent, and it
//! is started again empty (as after a crash without persistence: no stream, no group, no
//! counters). Fail-open: every payment is 202 and stored, readiness reports the queue and the
//! limiter down, and once Redis is back every payment settles, once. Fail-closed: every payment
//! is 503 `unavailable` and nothing is stored.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use atomic_core::ports::LedgerAudit;
use atomic_postgres::testkit::TestDatabase;
use atomic_redis::testkit::RedisServer;
use sqlx::PgPool;

use super::helpers::{
    Backend, Merchant, Reply, TestApp, assert_error, assert_success, balance, books_by_sql,
    onboard, pay, payment_body, spawn_on, wait_terminal,
};

const PAYMENTS: usize = 100;

async fn spawn(db: &TestDatabase, redis: &RedisServer, fail_closed: bool) -> TestApp {
    spawn_on(
        Backend::Memory,
        &[
            ("DATABASE_URL", db.url()),
            ("REDIS_URL", &redis.url()),
            ("RATE_LIMIT_PAYMENTS", "1000/1m"),
            ("RATE_LIMIT_GLOBAL", "1000/1m"),
            (
                "RATE_LIMIT_FAIL_CLOSED",
                if fail_closed { "true" } else { "false" },
            ),
            ("WORKER_LEASE", "2s"),
            ("SWEEP_INTERVAL", "500ms"),
            ("SWEEP_STALE_AFTER", "1s"),
        ],
    )
    .await
}

async fn count(pool: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_fail_open_accepts_stores_and_settles_everything_once_it_returns() {
    let db = TestDatabase::create().await;
    let pool = db.store().pool().clone();
    let mut redis = RedisServer::start().await;
    let app = spawn(&db, &redis, false).await;
    let m = onboard(&app, "Redis Shop", "USD").await;
    let first = pay(&app, &m.key, &m.account_id, 1, "tok_visa").await;
    wait_terminal(&app, &m.key, first["id"].as_str().unwrap()).await;

    redis.stop();
    let mut accepted = Vec::new();
    let mut slowest = Duration::ZERO;
    for (reply, took) in send_all(&app, &m, "redis-down").await {
        slowest = slowest.max(took);
        assert_success(&reply, 202);
        accepted.push(reply.data()["id"].as_str().unwrap().to_owned());
    }
    assert!(
        slowest < Duration::from_secs(3),
        "slowest accept {slowest:?}"
    );
    let ready = app.get_anon("/health/ready").await;
    assert_eq!(ready.status, 503, "{}", ready.text);
    assert_eq!(ready.data()["checks"]["queue"], "down", "{}", ready.text);
    assert_eq!(ready.data()["checks"]["limiter"], "down", "{}", ready.text);
    assert_eq!(ready.data()["checks"]["store"], "up", "{}", ready.text);
    // Every 202 is durable: each accepted id is a stored PENDING payment of the merchant, of
    // the amount sent.
    let stored_while_down: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM payments WHERE id = ANY($1::text[]::uuid[]) \
         AND status = 'PENDING' AND merchant_account = $2::uuid AND amount = 100",
    )
    .bind(&accepted)
    .bind(&m.account_id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        stored_while_down,
        i64::try_from(PAYMENTS).unwrap(),
        "every 202 is stored as sent"
    );

    redis.restart().await; // empty: no stream, no group
    let started = Instant::now();
    for id in &accepted {
        let payment = wait_terminal_within(&app, &m.key, id, Duration::from_secs(30)).await;
        assert_eq!(payment["status"], "SUCCESS", "{payment}");
    }
    let settled_in = started.elapsed();
    assert_eq!(
        balance(&app, &m.key, &m.account_id).await,
        1 + 100 * i64::try_from(PAYMENTS).unwrap()
    );
    // Straight from the database: every 202 is a stored payment, and every posting is the
    // one its payment asks for (World to the merchant, of its amount), balances included.
    let mut all_accepted = accepted.clone();
    all_accepted.push(first["id"].as_str().unwrap().to_owned());
    let books = books_by_sql(&pool, &all_accepted, &app.system_accounts["USD"]).await;
    assert!(books.is_right(), "books against the payments: {books:?}");
    assert_eq!(
        books.postings,
        i64::try_from(all_accepted.len()).unwrap(),
        "one posting per SUCCESS payment: {books:?}"
    );
    let audit = db.store().audit(Duration::from_secs(3600)).await.unwrap();
    assert!(audit.is_clean(), "books audit:\n{audit}");
    println!(
        "redis outage (fail-open): accepted_while_down={} stored={stored_while_down} \
         settled_after_return={} in {settled_in:?} postings={} slowest_accept={slowest:?}",
        accepted.len(),
        accepted.len(),
        books.postings
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_fail_closed_refuses_and_stores_nothing() {
    let db = TestDatabase::create().await;
    let pool = db.store().pool().clone();
    let mut redis = RedisServer::start().await;
    let app = spawn(&db, &redis, true).await;
    let m = onboard(&app, "Closed Shop", "USD").await;
    redis.stop();
    for (reply, _) in send_all(&app, &m, "closed").await {
        assert_error(&reply, 503, "unavailable");
    }
    assert_eq!(count(&pool, "SELECT count(*) FROM payments").await, 0);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM idempotency_keys").await,
        0
    );
    redis.restart().await;
    // Back to normal by itself: the same key now goes through.
    let reply = app
        .post(
            "/payments",
            &m.key,
            &payment_body(&m.account_id, 100, "tok_visa"),
            Some("closed-0"),
        )
        .await;
    assert_success(&reply, 202);
    let id = reply.data()["id"].as_str().unwrap().to_owned();
    let payment = wait_terminal(&app, &m.key, &id).await;
    assert_eq!(payment["status"], "SUCCESS");
    let books = books_by_sql(&pool, &[id], &app.system_accounts["USD"]).await;
    assert!(books.is_right(), "books against the payments: {books:?}");
    assert_eq!(
        books.postings, 1,
        "only the payment made after Redis returned"
    );
}

/// Sends the 100 payments of 100 at once, 16 at a time, keys `<prefix>-<i>`; each reply
/// with how long it took.
async fn send_all(app: &TestApp, m: &Merchant, prefix: &str) -> Vec<(Reply, Duration)> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (app, m, next, prefix) = (app.clone(), m.clone(), next.clone(), prefix.to_owned());
        clients.spawn(async move {
            let mut replies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= PAYMENTS {
                    return replies;
                }
                let started = Instant::now();
                let reply = app
                    .post(
                        "/payments",
                        &m.key,
                        &payment_body(&m.account_id, 100, "tok_visa"),
                        Some(&format!("{prefix}-{i}")),
                    )
                    .await;
                replies.push((reply, started.elapsed()));
            }
        });
    }
    let mut replies = Vec::new();
    while let Some(done) = clients.join_next().await {
        replies.extend(done.unwrap());
    }
    assert_eq!(replies.len(), PAYMENTS);
    replies
}

/// Like `wait_terminal`, with a longer deadline (a backlog drains after Redis returns).
async fn wait_terminal_within(
    app: &TestApp,
    key: &str,
    id: &str,
    within: Duration,
) -> serde_json::Value {
    let deadline = Instant::now() + within;
    loop {
        let reply = app.get(&format!("/payments/{id}"), key).await;
        assert_success(&reply, 200);
        let payment = reply.data()["payment"].clone();
        if payment["status"] == "SUCCESS" || payment["status"] == "FAILED" {
            return payment;
        }
        assert!(
            Instant::now() < deadline,
            "{id} not terminal within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
