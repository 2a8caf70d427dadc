//! PostgreSQL taken away while the server runs (issue 4; TEST-MATRIX rows on store outages):
//! every request that needs the store gets a fast 503 `unavailable` with Retry-After (never a
//! hang, never a 401 or 500), nothing is half-written, and service comes back by itself when
//! the database does. A TCP proxy between the server and PostgreSQL cuts every connection and
//! refuses new ones, which is what a crashed, restarting or unreachable database looks like to
//! the server.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use atomic_core::ports::LedgerAudit;
use atomic_postgres::testkit::{TestDatabase, with_address};

use super::helpers::{
    Backend, Merchant, Reply, TestApp, assert_error, assert_success, balance, books_by_sql,
    onboard, pay, payment_body, spawn_on, wait_terminal,
};
use super::proxy::Proxy;

/// TEST-MATRIX row 7: each refusal within the acquire/statement timeout, "e.g. ≤ 2 s".
const FAST: Duration = Duration::from_secs(2);
/// Row 7's number of POSTs while the database is away.
const POSTS: usize = 100;

#[track_caller]
fn assert_unavailable(reply: &Reply, took: Duration) {
    assert_error(reply, 503, "unavailable");
    let retry_after: u64 = reply
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    assert!(took <= FAST, "answered in {took:?}, over {FAST:?}");
}

async fn timed<F: std::future::Future<Output = Reply>>(request: F) -> (Reply, Duration) {
    let started = Instant::now();
    let reply = request.await;
    (reply, started.elapsed())
}

async fn wait_ready(app: &TestApp) -> Duration {
    let started = Instant::now();
    loop {
        if app.get_anon("/health/ready").await.status == 200 {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "not ready again 20 s after the database came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_unreachable_gives_fast_503s_writes_nothing_half_and_service_resumes() {
    let db = TestDatabase::create().await;
    let proxy = Proxy::start(db.server_address()).await;
    let url = with_address(db.url(), proxy.address());
    let app = spawn_on(
        Backend::Memory,
        &[
            ("DATABASE_URL", &url),
            ("DATABASE_ACQUIRE_TIMEOUT", "1s"),
            ("DATABASE_STATEMENT_TIMEOUT", "2s"),
            ("WORKER_LEASE", "2s"),
            ("SWEEP_INTERVAL", "500ms"),
            ("SWEEP_STALE_AFTER", "1s"),
        ],
    )
    .await;
    let m = onboard(&app, "Outage Shop", "USD").await;
    let before = pay(&app, &m.key, &m.account_id, 1000, "tok_visa").await;
    wait_terminal(&app, &m.key, before["id"].as_str().unwrap()).await;
    // One more in the pipeline as the database goes away: it must not be stranded.
    let in_flight = pay(&app, &m.key, &m.account_id, 300, "tok_visa").await;

    proxy.cut();
    // Row 7: 100 POSTs (16 clients at a time), each answered 503 within 2 s.
    let refused = send_posts(&app, &m).await;
    let mut took: Vec<Duration> = refused.iter().map(|(_, _, t)| *t).collect();
    for (key, reply, t) in &refused {
        assert!(*t <= FAST, "{key}: answered in {t:?}, over {FAST:?}");
        assert_unavailable(reply, *t);
    }
    took.sort();
    let (median, slowest) = (took[POSTS / 2], took[POSTS - 1]);
    let body = payment_body(&m.account_id, 500, "tok_visa");
    let (reply, took) = timed(app.post("/payments", &m.key, &body, Some("outage-1"))).await;
    assert_unavailable(&reply, took);
    let (reply, took) =
        timed(app.post("/payments", &app.platform_key, &body, Some("outage-2"))).await;
    assert_unavailable(&reply, took);
    let (reply, took) = timed(app.get(&format!("/accounts/{}", m.account_id), &m.key)).await;
    assert_unavailable(&reply, took);
    let (reply, took) = timed(app.get("/payments", &app.platform_key)).await;
    assert_unavailable(&reply, took);
    let merchant = serde_json::json!({"name": "Late", "currency": "USD"});
    let (reply, took) = timed(app.post("/merchants", &app.platform_key, &merchant, None)).await;
    assert_unavailable(&reply, took);
    let ready = app.get_anon("/health/ready").await;
    assert_eq!(ready.status, 503, "{}", ready.text);
    assert_eq!(ready.data()["checks"]["store"], "down", "{}", ready.text);
    assert_eq!(
        app.get_anon("/health").await.status,
        200,
        "the process itself is alive"
    );

    proxy.restore();
    let resumed_in = wait_ready(&app).await;
    // The refused keys were never claimed: the same requests now go through, once.
    let reply = app.post("/payments", &m.key, &body, Some("outage-1")).await;
    assert_success(&reply, 202);
    let after = reply.data()["id"].as_str().unwrap().to_owned();
    let replay = app.post("/payments", &m.key, &body, Some("outage-1")).await;
    assert_eq!(replay.data()["id"], after.as_str(), "{}", replay.text);
    // Row 7: the refused keys were not burnt: each retried with its body is one payment.
    let mut retried = Vec::new();
    for (i, (key, _, _)) in refused.iter().enumerate() {
        let reply = app
            .post("/payments", &m.key, &post_body(&m, i), Some(key))
            .await;
        assert_success(&reply, 202);
        assert_eq!(
            reply.header("idempotent-replayed"),
            None,
            "{key}: a new payment"
        );
        retried.push(reply.data()["id"].as_str().unwrap().to_owned());
    }
    let distinct: std::collections::HashSet<&String> = retried.iter().collect();
    assert_eq!(distinct.len(), POSTS, "one payment per key");
    for id in [in_flight["id"].as_str().unwrap(), &after]
        .into_iter()
        .chain(retried.iter().map(String::as_str))
    {
        let payment = wait_terminal(&app, &m.key, id).await;
        assert_eq!(payment["status"], "SUCCESS", "{payment}");
    }

    let pool = db.store().pool().clone();
    let payments: i64 = sqlx::query_scalar("SELECT count(*) FROM payments")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        payments,
        3 + i64::try_from(POSTS).unwrap(),
        "nothing written by the refused requests; one payment per retried key"
    );
    let retried_sum: i64 = (0..POSTS).map(post_amount).sum();
    assert_eq!(
        balance(&app, &m.key, &m.account_id).await,
        1000 + 300 + 500 + retried_sum
    );
    let mut accepted = retried.clone();
    accepted.extend([
        before["id"].as_str().unwrap().to_owned(),
        in_flight["id"].as_str().unwrap().to_owned(),
        after,
    ]);
    let books = books_by_sql(&pool, &accepted, &app.system_accounts["USD"]).await;
    assert!(books.is_right(), "books against the payments: {books:?}");
    let audit = db.store().audit(Duration::from_secs(3600)).await.unwrap();
    assert!(audit.is_clean(), "books audit:\n{audit}");
    println!(
        "outage test: {POSTS} POSTs while the database was away, all 503 unavailable; \
         median {median:?}, slowest {slowest:?} (limit {FAST:?}); {POSTS} keys retried, \
         {POSTS} payments; service resumed {resumed_in:?} after the database returned"
    );
}

fn post_amount(i: usize) -> i64 {
    100 + i64::try_from(i).unwrap()
}

fn post_body(m: &Merchant, i: usize) -> serde_json::Value {
    payment_body(&m.account_id, post_amount(i), "tok_visa")
}

/// Sends the row's POSTs, 16 at a time, keys `down-<i>`: each key with its answer and how
/// long that one request took.
async fn send_posts(app: &TestApp, m: &Merchant) -> Vec<(String, Reply, Duration)> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (app, m, next) = (app.clone(), m.clone(), next.clone());
        clients.spawn(async move {
            let mut replies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= POSTS {
                    return replies;
                }
                let key = format!("down-{i}");
                let (reply, took) =
                    timed(app.post("/payments", &m.key, &post_body(&m, i), Some(&key))).await;
                replies.push((i, key, reply, took));
            }
        });
    }
    let mut replies = Vec::new();
    while let Some(done) = clients.join_next().await {
        replies.extend(done.unwrap());
    }
    replies.sort_by_key(|(i, ..)| *i);
    assert_eq!(replies.len(), POSTS);
    replies
        .into_iter()
        .map(|(_, key, reply, took)| (key, reply, took))
        .collect()
}
