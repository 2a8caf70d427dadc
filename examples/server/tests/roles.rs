//! ROLE splits the server: an `api` process accepts and stores payments but settles none; a
//! `worker` process on the same database settles them and serves only the health routes.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::time::{Duration, Instant};

use atomic_postgres::testkit::TestDatabase;
use atomic_redis::testkit::{DeleteOnDrop, require_redis, unique_config};
use common::{Answered, KEY, KEY_HASH, onboard, server, wait_listening};
use serde_json::{Value, json};

async fn count(db: &TestDatabase, status: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM payments WHERE status = $1")
        .bind(status)
        .fetch_one(db.store().pool())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_process_stores_and_a_worker_process_settles() {
    let db = TestDatabase::create().await;
    let redis_url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    require_redis(&redis_url).await;
    let redis = unique_config(&redis_url);
    let _keys = DeleteOnDrop::new(&redis);
    let start = |role: &'static str| {
        server()
            .env("ROLE", role)
            .env("DATABASE_URL", db.url())
            .env("REDIS_URL", &redis_url)
            .env("REDIS_KEY_PREFIX", &redis.prefix)
            .env("MERCHANT_API_KEY_HASH", KEY_HASH)
            .env("RATE_LIMIT_GLOBAL", "off")
            .env("RATE_LIMIT_PAYMENTS", "off")
            .env("SWEEP_INTERVAL", "500ms")
            .env("SWEEP_STALE_AFTER", "1s")
            .spawn()
            .unwrap()
    };
    let mut api = start("api");
    let (address, _) = wait_listening(&mut api).await;
    let base = format!("http://{address}/api/v1");
    let http = reqwest::Client::new();
    let merchant = onboard(&http, &base, KEY, "Split Shop").await;
    let account = merchant["data"]["account"]["id"].as_str().unwrap();
    for _ in 0..20 {
        let reply = http
            .post(format!("{base}/payments"))
            .bearer_auth(KEY)
            .json(&json!({"merchantId": account, "amount": 250, "currency": "USD", "source": "tok_visa"}))
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 202);
    }
    // The api process has no worker: nothing moves while it runs alone.
    assert_eq!(count(&db, "PENDING").await, 20);

    let mut worker = start("worker");
    let (worker_address, _) = wait_listening(&mut worker).await;
    let worker_base = format!("http://{worker_address}/api/v1");
    let health = http
        .get(format!("{worker_base}/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let payments = http
        .get(format!("{worker_base}/payments"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(payments.status(), 404, "a worker serves no API");
    // The worker takes the jobs the api process queued in Redis and settles them.
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(&db, "SUCCESS").await < 20 {
        assert!(
            Instant::now() < deadline,
            "not settled by the worker process"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let balance: Value = http
        .get(format!("{base}/accounts/{account}"))
        .bearer_auth(KEY)
        .answer()
        .await;
    assert_eq!(balance["data"]["balance"], 20 * 250);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_connected_as_its_own_role_migrates_as_the_owner_and_settles() {
    let db = TestDatabase::create().await;
    // The operator's login role in atomic_server (README), on a database not yet migrated:
    // the server migrates it with the owner's URL and then works with its own role only.
    let login = db.server_login().await;
    atomic_postgres::MIGRATOR
        .undo(db.store().pool(), 0)
        .await
        .unwrap();
    let mut both = server()
        .env("DATABASE_URL", login.url())
        .env("DATABASE_MIGRATE_URL", db.url())
        .env("MERCHANT_API_KEY_HASH", KEY_HASH)
        .env("RATE_LIMIT_GLOBAL", "off")
        .env("RATE_LIMIT_PAYMENTS", "off")
        .spawn()
        .unwrap();
    let (address, _) = wait_listening(&mut both).await;
    let base = format!("http://{address}/api/v1");
    let http = reqwest::Client::new();
    let merchant = onboard(&http, &base, KEY, "Own Role Shop").await;
    let account = merchant["data"]["account"]["id"].as_str().unwrap();
    for _ in 0..10 {
        let reply = http
            .post(format!("{base}/payments"))
            .bearer_auth(KEY)
            .json(&json!({"merchantId": account, "amount": 300, "currency": "USD", "source": "tok_visa"}))
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 202);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(&db, "SUCCESS").await < 10 {
        assert!(Instant::now() < deadline, "not settled as the server role");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sessions: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE usename = $1")
            .bind(login.name())
            .fetch_one(db.store().pool())
            .await
            .unwrap();
    assert!(sessions > 0, "the server connects as its own role");
    let balance: Value = http
        .get(format!("{base}/accounts/{account}"))
        .bearer_auth(KEY)
        .answer()
        .await;
    assert_eq!(balance["data"]["balance"], 10 * 300);
}

/// Starts the server with `vars` and expects it to refuse to start; returns its last line.
async fn refused(vars: &[(&str, &str)]) -> String {
    let mut command = server();
    for (name, value) in vars {
        command.env(name, value);
    }
    let output = tokio::time::timeout(Duration::from_secs(30), command.output())
        .await
        .expect("the server stops at once")
        .unwrap();
    assert!(!output.status.success(), "the server started");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stderr.lines().last().unwrap_or_default().to_owned();
    assert!(last.starts_with("atomic-server: "), "{stderr}");
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_role_without_postgres_and_redis_is_refused_at_start_up() {
    let db = TestDatabase::create().await;
    let api = refused(&[("ROLE", "api"), ("DATABASE_URL", db.url())]).await;
    assert!(api.contains("ROLE api needs REDIS_URL"), "{api}");
    let worker = refused(&[("ROLE", "worker")]).await;
    assert!(
        worker.contains("ROLE worker needs DATABASE_URL and REDIS_URL"),
        "{worker}"
    );
    let api = refused(&[("ROLE", "api"), ("REDIS_URL", "redis://127.0.0.1:6379")]).await;
    assert!(api.contains("ROLE api needs DATABASE_URL"), "{api}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_false_on_a_database_missing_migrations_names_them() {
    let db = TestDatabase::create().await;
    atomic_postgres::MIGRATOR
        .undo(db.store().pool(), 20261201000004)
        .await
        .unwrap();
    let line = refused(&[("DATABASE_URL", db.url()), ("MIGRATE", "false")]).await;
    assert!(
        line.contains("MIGRATE=false but the database lacks migrations 20261203000005")
            && line.contains("20261203000007"),
        "{line}"
    );
    assert!(
        !line.contains("20261125000001"),
        "applied ones are not named: {line}"
    );
}
