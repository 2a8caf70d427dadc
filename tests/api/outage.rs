//! PostgreSQL taken away while the server runs (issue 4; TEST-MATRIX rows on store outages):
//! every request that needs the store gets a fast 503 `unavailable` with Retry-After (never a
//! hang, never a 401 or 500), nothing is half-written, and service comes back by itself when
//! the database does. A TCP proxy between the server and PostgreSQL cuts every connection and
//! refuses new ones, which is what a crashed, restarting or unreachable database looks like to
//! the server.

use std::time::{Duration, Instant};

use atomic_core::ports::LedgerAudit;
use atomic_postgres::testkit::{TestDatabase, with_address};

use super::helpers::{
    Backend, Reply, TestApp, assert_error, assert_success, balance, onboard, pay, payment_body,
    spawn_on, wait_terminal,
};
use super::proxy::Proxy;

#[track_caller]
fn assert_unavailable(reply: &Reply, took: Duration) {
    assert_error(reply, 503, "unavailable");
    let retry_after: u64 = reply
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    assert!(
        took < Duration::from_secs(5),
        "answered in {took:?}, not a hang"
    );
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
    for id in [in_flight["id"].as_str().unwrap(), &after] {
        let payment = wait_terminal(&app, &m.key, id).await;
        assert_eq!(payment["status"], "SUCCESS", "{payment}");
    }

    let pool = db.store().pool().clone();
    let payments: i64 = sqlx::query_scalar("SELECT count(*) FROM payments")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(payments, 3, "nothing written by the refused requests");
    assert_eq!(balance(&app, &m.key, &m.account_id).await, 1000 + 300 + 500);
    let audit = db.store().audit(Duration::from_secs(3600)).await.unwrap();
    assert!(audit.is_clean(), "books audit:\n{audit}");
    println!("outage test: service resumed {resumed_in:?} after the database returned");
}
