//! TEST-MATRIX row 30: slow queries hold every pooled connection. The server answers the
//! requests that cannot get a connection with 503 `unavailable` within the pool's acquire
//! timeout, the held ones with 503 once the statement timeout cuts them, none of them later
//! than that, and serves normally again as soon as the database is free.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use atomic_redis::testkit::{DeleteOnDrop, require_redis, unique_config};
use std::time::{Duration, Instant};

use atomic_postgres::testkit::TestDatabase;
use common::{KEY, KEY_HASH, server, wait_listening};

const POOL: usize = 2;
const ACQUIRE: Duration = Duration::from_millis(500);
const STATEMENT: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_pool_answers_503_within_its_timeouts_and_recovers() {
    let db = TestDatabase::create().await;
    let redis_url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    require_redis(&redis_url).await;
    let redis = unique_config(&redis_url);
    let _keys = DeleteOnDrop::new(&redis);
    let mut child = server()
        .env("ROLE", "api")
        .env("DATABASE_URL", db.url())
        .env("REDIS_URL", &redis_url)
        .env("REDIS_KEY_PREFIX", &redis.prefix)
        .env("DATABASE_POOL_SIZE", POOL.to_string())
        .env("DATABASE_ACQUIRE_TIMEOUT", "500ms")
        .env("DATABASE_STATEMENT_TIMEOUT", "2s")
        .env("REQUEST_TIMEOUT", "10s")
        .env("MERCHANT_API_KEY_HASH", KEY_HASH)
        .env("RATE_LIMIT_GLOBAL", "off")
        .spawn()
        .unwrap();
    let (address, _) = wait_listening(&mut child).await;
    let url = format!("http://{address}/api/v1/payments");
    let http = reqwest::Client::new();
    assert_eq!(
        http.get(&url)
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // A slow holder: every query on payments waits behind this lock.
    let mut holder = db.store().pool().begin().await.unwrap();
    sqlx::query("LOCK TABLE payments IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *holder)
        .await
        .unwrap();

    let requests = 4 * POOL;
    let mut tasks = Vec::new();
    for _ in 0..requests {
        let (http, url) = (http.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let reply = http.get(&url).bearer_auth(KEY).send().await.unwrap();
            let status = reply.status().as_u16();
            let retry_after = reply.headers().contains_key("retry-after");
            let body: serde_json::Value = reply.json().await.unwrap();
            (status, retry_after, body, started.elapsed())
        }));
    }
    let mut fast = 0;
    let mut slowest = Duration::ZERO;
    for task in tasks {
        let (status, retry_after, body, took) = task.await.unwrap();
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["error"]["code"], "unavailable", "{body}");
        assert!(retry_after, "503 carries Retry-After");
        if took <= ACQUIRE + Duration::from_millis(500) {
            fast += 1;
        }
        slowest = slowest.max(took);
    }
    // No request outlives the statement timeout by much, none reaches the request timeout,
    // and those that found no connection were told so within the acquire timeout.
    assert!(
        slowest <= STATEMENT + Duration::from_secs(2),
        "slowest {slowest:?}"
    );
    assert!(
        fast >= requests - POOL,
        "{fast} of {requests} answered within the acquire timeout"
    );

    holder.rollback().await.unwrap();
    let again = Instant::now();
    assert_eq!(
        http.get(&url)
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    println!(
        "row 30: pool={POOL} requests={requests} all_503=yes fast_503s={fast} slowest={slowest:?} \
         recovered_in={:?}",
        again.elapsed()
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "the server is still running"
    );
}
