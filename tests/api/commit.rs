//! A write the store commits is followed through, whatever becomes of its request: an answer
//! is never a 503 once the payment is stored (API.md: a 503 means nothing was stored), and a
//! client that hangs up right after sending leaves no payment waiting for the sweep.

use std::time::{Duration, Instant};

use atomic_postgres::testkit::TestDatabase;
use atomic_redis::testkit::{DeleteOnDrop, require_redis, unique_config};
use tokio::io::AsyncWriteExt;

use super::helpers::{Backend, assert_success, onboard, payment_body, spawn_on};

/// Payments of `account` that are not yet SUCCESS or FAILED, and all of them.
async fn open_and_stored(pool: &sqlx::PgPool, account: &str) -> (i64, i64) {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status NOT IN ('SUCCESS', 'FAILED')), count(*) \
         FROM payments WHERE merchant_account = $1::uuid",
    )
    .bind(account)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_its_deadline_while_its_insert_commits_answers_the_payment() {
    let db = TestDatabase::create().await;
    let pool = db.store().pool().clone();
    let app = spawn_on(
        Backend::Memory,
        &[
            ("DATABASE_URL", db.url()),
            ("REQUEST_TIMEOUT", "5s"),
            ("DATABASE_STATEMENT_TIMEOUT", "30s"),
        ],
    )
    .await;
    let m = onboard(&app, "Slow Commit", "USD").await;

    // A lock on the merchant's account row stalls the insert's foreign-key check, so the
    // insert is in its statement when the request deadline passes.
    let mut lock = pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM accounts WHERE id = $1::uuid FOR UPDATE")
        .bind(&m.account_id)
        .execute(&mut *lock)
        .await
        .unwrap();
    let body = payment_body(&m.account_id, 700, "tok_visa");
    let request = {
        let (app, key) = (app.clone(), m.key.clone());
        tokio::spawn(async move { app.post("/payments", &key, &body, None).await })
    };
    // Past the 5 s deadline (the answer cannot come while the lock is held), then let go.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(6) && !request.is_finished() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    lock.commit().await.unwrap();
    let reply = request.await.unwrap();

    let stored: Vec<String> =
        sqlx::query_scalar("SELECT id::text FROM payments WHERE merchant_account = $1::uuid")
            .bind(&m.account_id)
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(stored.len(), 1, "the insert was committed");
    assert_eq!(
        reply.status, 202,
        "a stored payment must not be answered {}: {}",
        reply.status, reply.text
    );
    assert_success(&reply, 202);
    assert_eq!(reply.data()["id"], stored[0].as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_hang_up_after_sending_leave_no_payment_to_the_sweep() {
    const CLIENTS: usize = 300;
    let db = TestDatabase::create().await;
    let pool = db.store().pool().clone();
    let redis_url =
        std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    require_redis(&redis_url).await;
    let redis = unique_config(&redis_url);
    let _keys = DeleteOnDrop::new(&redis);
    // The sweep would settle a stranded payment only after a minute: what settles within the
    // bound below was enqueued by its request.
    let app = spawn_on(
        Backend::Memory,
        &[
            ("DATABASE_URL", db.url()),
            ("REDIS_URL", &redis_url),
            ("REDIS_KEY_PREFIX", &redis.prefix),
            ("SWEEP_INTERVAL", "60s"),
            ("SWEEP_STALE_AFTER", "60s"),
        ],
    )
    .await;
    let m = onboard(&app, "Hang Up", "USD").await;
    let body = payment_body(&m.account_id, 100, "tok_visa").to_string();
    let request = format!(
        "POST /api/v1/payments HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        app.address,
        m.key,
        body.len()
    );
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(CLIENTS));
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let (address, request, barrier) = (app.address, request.clone(), barrier.clone());
        clients.push(tokio::spawn(async move {
            let mut socket = tokio::net::TcpStream::connect(address).await.unwrap();
            barrier.wait().await;
            socket.write_all(request.as_bytes()).await.unwrap();
            // Hang up a few milliseconds later, mid-request, without reading the answer.
            tokio::time::sleep(Duration::from_millis((i % 100) as u64 * 3)).await;
            drop(socket);
        }));
    }
    for client in clients {
        client.await.unwrap();
    }

    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut open, mut stored) = open_and_stored(&pool, &m.account_id).await;
    let mut last_stored = -1;
    // Settled once the stored count is steady and nothing stored is open.
    while (open > 0 || stored != last_stored) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        last_stored = stored;
        (open, stored) = open_and_stored(&pool, &m.account_id).await;
    }
    println!("{CLIENTS} clients hung up: {stored} payments stored, {open} still open");
    assert!(stored > 0, "no request got as far as the store");
    assert_eq!(
        open, 0,
        "{open} of {stored} stored payments left to the sweep 10 s after their clients left"
    );
}
